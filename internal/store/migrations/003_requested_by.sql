-- Issue 11, the control socket: a kill an operator asked for (reason
-- 'manual') says who asked, e.g. 'uid 0 pid 1234' (the caller's
-- credentials as the kernel gave them at connect). NULL for every other
-- kill and for rows written before this migration.
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS requested_by text;
