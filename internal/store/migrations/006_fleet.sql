-- Issue 13, the fleet view: one row per host, for `supervisor fleet` and
-- dashboards.
--
--   host           the daemon's --host-id
--   last_snapshot  created_at of the host's newest health row (NULL for a
--                  host known only from kill rows)
--   status         that row's status (ok, warning)
--   silent         no health row for more than 3 of the host's own summary
--                  intervals (summary_interval_s in the newest row's
--                  details; 300 s, the seed job's cron period and the
--                  default --summary-interval, where a row does not say),
--                  or no health row at all
--   agents         agents_tracked of the newest row (NULL in seed rows)
--   zombies        zombie_count of the newest row
--   free_mem_mb    free_mem_mb of the newest row
--   kills_24h      {"reason": count} of the host's kill rows signalled in
--                  the last 24 h; dry runs and rows that signalled nothing
--                  (refused by the guard, already_gone before the signal)
--                  not counted; {} when none
--
-- Rows with host NULL (written by the seed's cron job, which had no host
-- column) are left out: they cannot be told apart by host, and once the
-- cron job is replaced they would show as one host forever silent.
--
-- Cost: the hosts are found by a loose index scan (a recursive CTE that
-- jumps from one host to the next on system_health_check_host_created and
-- agent_kills_host_signalled), so reading the view costs one index probe
-- per host and table, not a scan of the tables; each host's newest row is
-- one backward probe of the same index, and its day of kills a range scan of
-- agent_kills_host_signalled. Values are taken from details only when they
-- are JSON numbers, so one odd row cannot make the whole view fail.
--
-- A view runs with its owner's rights on the tables: a dashboard's role
-- needs only USAGE on schema tel and SELECT on tel.fleet.
CREATE OR REPLACE VIEW tel.fleet AS
WITH RECURSIVE snapshot_hosts(host) AS (
	(SELECT s.host FROM tel.system_health s
	  WHERE s.check_type = 'process_reaper' AND s.host IS NOT NULL
	  ORDER BY s.host LIMIT 1)
	UNION ALL
	SELECT (SELECT s.host FROM tel.system_health s
	         WHERE s.check_type = 'process_reaper' AND s.host > h.host
	         ORDER BY s.host LIMIT 1)
	FROM snapshot_hosts h WHERE h.host IS NOT NULL
), kill_hosts(host) AS (
	(SELECT k.host FROM tel.agent_kills k ORDER BY k.host LIMIT 1)
	UNION ALL
	SELECT (SELECT k.host FROM tel.agent_kills k WHERE k.host > h.host ORDER BY k.host LIMIT 1)
	FROM kill_hosts h WHERE h.host IS NOT NULL
), hosts(host) AS (
	SELECT host FROM snapshot_hosts WHERE host IS NOT NULL
	UNION
	SELECT host FROM kill_hosts WHERE host IS NOT NULL
)
SELECT h.host,
	s.last_snapshot,
	s.status,
	s.last_snapshot IS NULL
		OR s.last_snapshot < now() - 3 * make_interval(secs => coalesce(s.interval_s, 300)) AS silent,
	s.agents,
	s.zombies,
	s.free_mem_mb,
	k.kills_24h
FROM hosts h
LEFT JOIN LATERAL (
	SELECT n.created_at::timestamptz AS last_snapshot,
		n.status::text AS status,
		CASE WHEN jsonb_typeof(n.details->'summary_interval_s') = 'number'
			THEN nullif(greatest((n.details->'summary_interval_s')::numeric, 0), 0)::double precision END AS interval_s,
		CASE WHEN jsonb_typeof(n.details->'agents_tracked') = 'number'
			THEN (n.details->'agents_tracked')::numeric::bigint END AS agents,
		CASE WHEN jsonb_typeof(n.details->'zombie_count') = 'number'
			THEN (n.details->'zombie_count')::numeric::bigint END AS zombies,
		CASE WHEN jsonb_typeof(n.details->'free_mem_mb') = 'number'
			THEN (n.details->'free_mem_mb')::numeric::bigint END AS free_mem_mb
	FROM tel.system_health n
	WHERE n.check_type = 'process_reaper' AND n.host = h.host
	ORDER BY n.created_at DESC
	LIMIT 1
) s ON true
CROSS JOIN LATERAL (
	SELECT coalesce(jsonb_object_agg(r.reason, r.n), '{}'::jsonb) AS kills_24h
	FROM (SELECT a.reason, count(*) AS n
	      FROM tel.agent_kills a
	      WHERE a.host = h.host AND a.signalled_at > now() - interval '24 hours' AND NOT a.dry_run
	        AND a.outcome NOT IN ('refused', 'already_gone')
	      GROUP BY a.reason) r
) k
ORDER BY h.host;
