-- Issue 13, attribution: where the killed process ran, from its
-- /proc/PID/cgroup when it was queued: the cgroup v2 path, the container ID
-- (64 hex digits) and the Kubernetes pod UID the path names. NULL when
-- unknown (no v2 line, unreadable, or the path names no container or pod)
-- and for rows written before this migration.
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS cgroup text;
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS container_id text;
ALTER TABLE tel.agent_kills ADD COLUMN IF NOT EXISTS pod_uid text;
