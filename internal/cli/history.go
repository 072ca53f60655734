package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/jackc/pgx/v5"
)

// History prints the snapshots and kills of the last `since`: from
// PostgreSQL when a database is configured (plus what is still spooled),
// else from the spool, which is then the store.
func History(ctx context.Context, cfg *config.Config, since time.Duration, asJSON bool, stdout, stderr io.Writer) error {
	from := time.Now().Add(-since)
	byID := map[string]store.Record{}
	spooled, bad, err := store.ReadSpool(cfg.StateDir)
	if err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "supervisor: %d damaged lines in the spool skipped; the daemon moves them to spool.bad when it starts\n", bad)
	}
	for _, r := range spooled {
		if !r.Created.Before(from) {
			byID[r.ID] = r
		}
	}
	if cfg.DatabaseURL != "" {
		recs, err := dbHistory(ctx, cfg.DatabaseURL, from)
		if err != nil {
			return fmt.Errorf("database: %s", config.RedactURL(cfg.DatabaseURL, err.Error()))
		}
		for _, r := range recs {
			byID[r.ID] = r
		}
	}
	recs := make([]store.Record, 0, len(byID))
	for _, r := range byID {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Created.Before(recs[j].Created) })
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(recs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOST\tKIND\tREASON\tSUMMARY")
	for _, r := range recs {
		reason := "-"
		if r.Kill != nil {
			reason = r.Kill.Reason
		}
		// Names, hosts and reasons come from processes and from other
		// machines' rows: escaped for the terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Created.Local().Format("2006-01-02 15:04:05"), printable(r.Host), r.Kind,
			printable(reason), summary(r))
	}
	if len(recs) == 0 {
		fmt.Fprintf(tw, "(nothing since %s)\n", from.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

func summary(r store.Record) string {
	if k := r.Kill; k != nil {
		s := fmt.Sprintf("pid %d %s: %s", k.PID, printable(k.Comm), printable(k.Outcome))
		if k.FinalSignal != "" {
			s += " by SIG" + k.FinalSignal
		}
		s += fmt.Sprintf(", %.2f ms late", k.LatenessMS)
		if len(k.Descendants) > 0 {
			s += fmt.Sprintf(", %d descendants", len(k.Descendants))
		}
		if k.SessionPID != nil {
			s += fmt.Sprintf(", session of pid %d", *k.SessionPID)
		}
		if k.MemoryBytes != nil {
			s += fmt.Sprintf(", session memory %.1f MiB", float64(*k.MemoryBytes)/(1<<20))
		}
		if k.Procs != nil {
			s += fmt.Sprintf(" in %d processes", *k.Procs)
		}
		if k.RequestedBy != "" {
			s += ", asked by " + printable(k.RequestedBy)
		}
		if id := k.ContainerID; id != "" {
			s += ", container " + printable(id[:min(12, len(id))])
		}
		if k.PodUID != "" {
			s += ", pod " + printable(k.PodUID)
		}
		return s
	}
	if sn := r.Snapshot; sn != nil {
		var d map[string]any
		_ = json.Unmarshal(sn.Details, &d)
		s := fmt.Sprintf("%s: %v zombies, %v MB free, swap %v%%, %v killed",
			sn.Status, d["zombie_count"], d["free_mem_mb"], d["swap_pct"], d["stale_processes_killed"])
		if sn.ActionTaken != nil {
			s += " (" + strings.TrimPrefix(*sn.ActionTaken, "Killed ") + ")"
		}
		return printable(s)
	}
	return ""
}

// dbHistory reads both tables. Rows the seed wrote have no row_id; they are
// listed under their serial id.
func dbHistory(ctx context.Context, dsn string, from time.Time) ([]store.Record, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var out []store.Record
	rows, err := conn.Query(cctx, `SELECT coalesce(row_id::text, 'seed-' || id), coalesce(host, ''), created_at::timestamptz,
		check_type, status, coalesce(details::text, '{}'), action_taken
		FROM tel.system_health WHERE check_type = $1 AND created_at >= $2`, store.CheckType, from)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		r := store.Record{Kind: store.KindSnapshot, Snapshot: &store.SnapshotRow{}}
		var details string
		if err := rows.Scan(&r.ID, &r.Host, &r.Created, &r.Snapshot.CheckType, &r.Snapshot.Status, &details, &r.Snapshot.ActionTaken); err != nil {
			return nil, err
		}
		r.Snapshot.Details = json.RawMessage(details)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// A database not yet migrated (a new binary reading before its daemon
	// migrated) lacks the later columns: no reason (002) means every kill
	// there was at max age; the others (003 requested_by, 004 memory_bytes
	// and procs, 005 container_id and pod_uid) read as unknown.
	have := map[string]bool{}
	crows, err := conn.Query(cctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = to_regclass('tel.agent_kills') AND attnum > 0 AND NOT attisdropped`)
	if err != nil {
		return nil, err
	}
	for crows.Next() {
		var name string
		if err := crows.Scan(&name); err != nil {
			return nil, err
		}
		have[name] = true
	}
	if err := crows.Err(); err != nil {
		return nil, err
	}
	col := func(name, expr, missing string) string {
		if have[name] {
			return expr
		}
		return missing
	}
	cols := strings.Join([]string{
		col("reason", "reason", "'"+store.DefaultReason+"'"),
		col("session_pid", "session_pid", "NULL::integer"),
		col("session_started_at", "session_started_at", "NULL::timestamptz"),
		col("requested_by", "coalesce(requested_by, '')", "''"),
		col("memory_bytes", "memory_bytes", "NULL::bigint"),
		col("procs", "procs", "NULL::integer"),
		col("container_id", "coalesce(container_id, '')", "''"),
		col("pod_uid", "coalesce(pod_uid, '')", "''"),
	}, ", ")
	rows, err = conn.Query(cctx, `SELECT id::text, host, created_at, pid, comm, cmdline, rule, started_at, deadline,
		signalled_at, exited_at, lateness_ms, coalesce(final_signal, ''), outcome, descendants, dry_run, `+cols+`
		FROM tel.agent_kills WHERE created_at >= $1`, from)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		k := &store.KillRow{}
		r := store.Record{Kind: store.KindKill, Kill: k}
		if err := rows.Scan(&r.ID, &r.Host, &r.Created, &k.PID, &k.Comm, &k.Cmdline, &k.Rule, &k.StartedAt, &k.Deadline,
			&k.SignalledAt, &k.ExitedAt, &k.LatenessMS, &k.FinalSignal, &k.Outcome, &k.Descendants, &k.DryRun,
			&k.Reason, &k.SessionPID, &k.SessionStartedAt, &k.RequestedBy, &k.MemoryBytes, &k.Procs,
			&k.ContainerID, &k.PodUID); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
