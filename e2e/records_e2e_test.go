package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
)

// killRecords returns the spooled kill rows for pid.
func killRecords(t *testing.T, dir string, pid int) []store.Record {
	t.Helper()
	var out []store.Record
	for _, r := range spooled(t, dir) {
		if r.Kill != nil && int(r.Kill.PID) == pid {
			out = append(out, r)
		}
	}
	return out
}

// A kill is on record from its first signal: the row is spooled with
// outcome pending, a daemon SIGKILLed during a long grace leaves it, and a
// kill that finishes replaces it with the complete row under the same id.
func TestIntegrationKillRecordPending(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1h", "--state-dir", dir)
	d.stopSignal = syscall.SIGKILL
	a := startAgent(t, "claude", "-ignore-term")
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, maxAge+30*time.Second, func(m map[string]any) bool {
		return m["msg"] == "kill record pending" && num(m["pid"]) == int64(a.pid)
	})
	d.stop(t) // SIGKILL, within the hour of grace
	recs := killRecords(t, dir, a.pid)
	if len(recs) != 1 || recs[0].Kill.Outcome != store.OutcomePending || recs[0].ID != m["id"] {
		t.Fatalf("after a crash mid-kill the spool holds %+v, want one pending row with id %v", recs, m["id"])
	}
	if recs[0].Kill.FinalSignal != "TERM" || recs[0].Kill.SignalledAt.IsZero() {
		t.Errorf("pending row %+v: want final signal TERM and the signal time", recs[0].Kill)
	}
	if !a.alive() {
		t.Fatal("the agent died without SIGKILL: the test proves nothing")
	}

	// A second daemon on the same state dir kills it (its deadline is
	// past) and completes its own row; the crashed daemon's row stays.
	d2 := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "500ms", "--state-dir", dir)
	m2 := d2.waitLog(t, 30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	d2.stop(t)
	recs = killRecords(t, dir, a.pid)
	if len(recs) != 2 {
		t.Fatalf("spool holds %d rows for the agent, want the crashed daemon's pending one and the complete one: %+v", len(recs), recs)
	}
	done := recs[1]
	if recs[0].ID != m["id"] || recs[0].Kill.Outcome != store.OutcomePending {
		t.Errorf("first row %+v, want the pending row %v", recs[0].Kill, m["id"])
	}
	if done.Kill.Outcome != "killed" || done.Kill.Outcome != m2["outcome"] || done.Kill.ExitedAt == nil {
		t.Errorf("second row %+v: want the complete row (killed, with its exit time)", done.Kill)
	}
}
