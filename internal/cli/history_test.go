package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestIntegrationHistoryReasons: history shows each kill's reason, in the
// REASON column and in --json, from PostgreSQL and from the spool; on a
// database not yet migrated to 002 (no reason column) every kill reads as
// max_age instead of failing.
func TestIntegrationHistoryReasons(t *testing.T) {
	db := testutil.Database(t, "sv_test_")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	state := t.TempDir()
	sp, err := store.OpenSpool(state, 100)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Config{Spool: sp, Postgres: store.NewPostgres(pool), Host: "hist"})
	now := time.Now().UTC()
	kill := func(pid int32, reason string, session int32) *store.KillRow {
		k := &store.KillRow{PID: pid, Comm: "node", Cmdline: "node", Rule: "claude", StartedAt: now.Add(-time.Minute),
			Deadline: now, SignalledAt: now, FinalSignal: "TERM", Outcome: "terminated", Reason: reason}
		if session != 0 {
			start := now.Add(-time.Hour)
			k.SessionPID, k.SessionStartedAt = &session, &start
		}
		return k
	}
	st.Add(store.KindKill, now, nil, kill(71001, "max_age", 71001))
	st.Add(store.KindKill, now, nil, kill(71002, "leftover", 71001))
	// A manual kill of a container's process and a memory kill: who asked,
	// the session's figures and the container say so in the summary.
	manual := kill(71004, "manual", 0)
	manual.RequestedBy, manual.ContainerID, manual.PodUID = "uid 0 pid 4242", strings.Repeat("ab", 32), "0f3c1e2a-6b7d-4c8e-9f10-1a2b3c4d5e6f"
	st.Add(store.KindKill, now, nil, manual)
	memKill := kill(71005, "memory", 71005)
	mem, procs := int64(300<<20), int32(3)
	memKill.MemoryBytes, memKill.Procs = &mem, &procs
	st.Add(store.KindKill, now, nil, memKill)
	// Any user names a process: an escape sequence must reach the terminal
	// escaped, not raw.
	evil := kill(71006, "max_age", 0)
	evil.Comm = "\x1b[2Jevil"
	st.Add(store.KindKill, now, nil, evil)
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st.Add(store.KindKill, now, nil, kill(71003, "leftover", 71001)) // stays spooled
	sp.Close()

	cfg := &config.Config{DatabaseURL: db, StateDir: state}
	run := func(asJSON bool) string {
		t.Helper()
		var out, errs bytes.Buffer
		if err := History(ctx, cfg, time.Hour, asJSON, &out, &errs); err != nil {
			t.Fatalf("history: %v (%s)", err, errs.String())
		}
		return out.String()
	}
	table := run(false)
	if !strings.Contains(table, "REASON") {
		t.Errorf("no REASON column:\n%s", table)
	}
	for pid, reason := range map[string]string{"71001": "max_age", "71002": "leftover", "71003": "leftover"} {
		if !regexp.MustCompile(`(?m)\skill\s+` + reason + `\s+pid ` + pid + ` `).MatchString(table) {
			t.Errorf("pid %s not listed with reason %s:\n%s", pid, reason, table)
		}
	}
	for _, want := range []string{"pid 71004 node: terminated by SIGTERM, 0.00 ms late, asked by uid 0 pid 4242, container abababababab, pod 0f3c1e2a-6b7d-4c8e-9f10-1a2b3c4d5e6f",
		"pid 71005 node: terminated by SIGTERM, 0.00 ms late, session of pid 71005, session memory 300.0 MiB in 3 processes"} {
		if !strings.Contains(table, want) {
			t.Errorf("history lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "\x1b") || !strings.Contains(table, `pid 71006 \x1b[2Jevil: terminated`) {
		t.Errorf("a process name with an escape sequence is not escaped:\n%q", table)
	}
	var recs []store.Record
	if err := json.Unmarshal([]byte(run(true)), &recs); err != nil {
		t.Fatal(err)
	}
	got := map[int32]string{}
	for _, r := range recs {
		if r.Kill != nil && (r.Kill.PID == 71004 || r.Kill.PID == 71005 || r.Kill.PID == 71006) {
			continue // the summary checks above
		}
		if r.Kill != nil {
			got[r.Kill.PID] = r.Kill.Reason
			if r.Kill.SessionPID == nil || *r.Kill.SessionPID != 71001 || r.Kill.SessionStartedAt == nil {
				t.Errorf("pid %d: session %v %v, want 71001", r.Kill.PID, r.Kill.SessionPID, r.Kill.SessionStartedAt)
			}
		}
	}
	if got[71001] != "max_age" || got[71002] != "leftover" || got[71003] != "leftover" {
		t.Errorf("--json reasons %v", got)
	}

	// Before migration 002: no such columns (nor the later view over
	// them); kills read as max_age.
	if _, err := pool.Exec(ctx, `DROP VIEW IF EXISTS tel.fleet; DROP INDEX tel.agent_kills_reason_host_signalled;
		ALTER TABLE tel.agent_kills DROP COLUMN reason, DROP COLUMN session_pid, DROP COLUMN session_started_at`); err != nil {
		t.Fatal(err)
	}
	table = run(false)
	if !regexp.MustCompile(`(?m)\skill\s+max_age\s+pid 71002 `).MatchString(table) {
		t.Errorf("pre-002 database: pid 71002 not max_age:\n%s", table)
	}
}
