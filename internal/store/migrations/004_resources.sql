-- Issue 10, the resource guard: a session killed for its resources (reasons
-- memory, procs, idle, pressure) carries its figures at the decision.
--
-- memory_bytes: the session's memory (the anon RSS of its members) when the
-- limit was crossed; procs: its live processes; details: the policy's own
-- figures ({"limit": ..., "idle_seconds": ..., "psi_some_avg10": ...}).
-- NULL when unknown: kills at max age, leftovers, manual kills, rows written
-- before this migration, and memory for a process limit crossed at a fork
-- (before any sample). Nullable columns without a default are added without
-- rewriting the table.
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS memory_bytes bigint;
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS procs integer;
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS details jsonb;
