-- Issue 9, sessions and leftovers: a kill says why (reason) and which
-- session the process belonged to. Each leftover killed is its own row.
--
-- reason: tracker.Reason (max_age, leftover, memory, procs, idle, pressure,
-- manual). Rows written before this migration, and rows a daemon of an
-- older version still writes, were all kills at max age: the default says
-- so. A constant default adds the column without rewriting the table
-- (PostgreSQL 11 and later). No CHECK: the vocabulary belongs to the
-- daemon, and a row refused for a new word would be set aside, not stored.
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS reason text NOT NULL DEFAULT 'max_age';

-- The session's agent (PID and start time; the start time tells a reused
-- PID apart). NULL when the killed process belonged to no session, and on
-- rows written before this migration.
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS session_pid integer;
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS session_started_at timestamptz;

-- "Leftovers killed on this host, per hour, this week" and the like: equality
-- on reason and host, a range on the time of the kill.
CREATE INDEX IF NOT EXISTS agent_kills_reason_host_signalled ON tel.agent_kills (reason, host, signalled_at);
