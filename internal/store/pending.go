package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// PendingKills returns host's kill rows still pending that were signalled
// before before, whole, as records: what an earlier run of the daemon
// delivered and then stopped before completing (the daemon completes them
// by replacing each under its id).
func (p *Postgres) PendingKills(ctx context.Context, host string, before time.Time) ([]Record, error) {
	if err := p.Migrate(ctx); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT id::text, created_at, pid, comm, cmdline, rule, started_at, deadline,
			signalled_at, exited_at, lateness_ms, coalesce(final_signal, ''), outcome, descendants, dry_run,
			reason, session_pid, session_started_at, coalesce(requested_by, ''), memory_bytes, procs, details::text,
			coalesce(cgroup, ''), coalesce(container_id, ''), coalesce(pod_uid, '')
		FROM tel.agent_kills WHERE host = $1 AND outcome = $2 AND signalled_at < $3 ORDER BY signalled_at`,
		host, OutcomePending, before)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		k := &KillRow{}
		r := Record{Kind: KindKill, Host: host, Kill: k}
		var details *string
		err := row.Scan(&r.ID, &r.Created, &k.PID, &k.Comm, &k.Cmdline, &k.Rule, &k.StartedAt, &k.Deadline,
			&k.SignalledAt, &k.ExitedAt, &k.LatenessMS, &k.FinalSignal, &k.Outcome, &k.Descendants, &k.DryRun,
			&k.Reason, &k.SessionPID, &k.SessionStartedAt, &k.RequestedBy, &k.MemoryBytes, &k.Procs, &details,
			&k.Cgroup, &k.ContainerID, &k.PodUID)
		if err == nil && details != nil {
			err = json.Unmarshal([]byte(*details), &k.Details)
		}
		return r, err
	})
}
