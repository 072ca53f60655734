package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestIntegrationCrashMidMassKill: the daemon is SIGKILLed in the middle of
// a mass kill of 1,000 TERM-ignoring agents — some already SIGKILLed by it
// (their complete rows not written), the rest still in their grace — and a
// second daemon starts on the same state dir and database. Every agent
// dies; none is signalled before its deadline by either daemon (their kill
// lines' boot-time fields); each has exactly one row in tel.agent_kills,
// none left pending: the rows the first daemon left pending are completed,
// by the second's kill of the same process under the same id, or as
// interrupted when the process was already gone.
func TestIntegrationCrashMidMassKill(t *testing.T) {
	needRoot(t)
	const n = 1000
	const name = "crash-agent"
	db, conn := testDB(t)
	dir := t.TempDir()
	host := "crash-" + strconv.Itoa(n)

	fk := runAgent(t, exec.Command(forker(t), "burst", name, strconv.Itoa(n), "stubborn"))
	f := strings.Fields(fk.waitLine(t, "ready ", 30*time.Second)) // ready FIRST LAST
	first, _ := strconv.ParseInt(f[1], 10, 64)
	grace := 3 * time.Second
	maxAge := (time.Duration(boottime()-first) + 4*time.Second).Round(time.Millisecond)
	args := []string{"--log-level", "debug", "--agent", name, "--max-age", maxAge.String(), "--summary-interval", "1h",
		"--state-dir", dir, "--database-url", db, "--host-id", host}

	d1 := startDaemon(t, append(args, "--kill-grace", grace.String())...)
	d1.stopSignal = syscall.SIGKILL
	// SIGKILLed as soon as its first kill is complete: by then every agent
	// has had its SIGTERM and the SIGKILLs are going out.
	isKill := func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == name }
	d1.waitLog(t, maxAge+grace+60*time.Second, isKill)
	d1.stop(t)
	firsts := d1.findLogs(func(m map[string]any) bool { return m["msg"] == "kill record pending" })
	pendingLines := len(firsts)
	killed1 := d1.findLogs(isKill)
	alive := n - len(fk.out.matching("exit ")) // about: the forker reaps as it can
	t.Logf("first daemon SIGKILLed after %d kill lines, %d pending rows spooled; %d agents still alive", len(killed1), pendingLines, alive)

	d2 := startDaemon(t, append(args, "--kill-grace", "500ms")...)
	if _, ok := fk.out.take("done", 60*time.Second); !ok {
		t.Fatalf("%d agents still alive a minute after the second daemon started", n-len(fk.out.matching("exit ")))
	}
	missed := n - len(fk.out.matching("exit "))

	// The rows: exactly one per agent, none pending, once the second
	// daemon has delivered everything.
	var rows, perPID, pending int
	query := func() error {
		return conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT pid), count(*) FILTER (WHERE outcome = 'pending')
			FROM tel.agent_kills WHERE host = $1 AND comm = $2`, host, name).Scan(&rows, &perPID, &pending)
	}
	// Up to a minute for the rows to settle; then what is there is judged.
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if query() == nil && perPID >= n && pending == 0 && rows >= n {
			break
		}
	}
	d2.stop(t) // SIGTERM: everything delivered
	if err := query(); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	rs, err := conn.Query(context.Background(), `SELECT outcome, count(*) FROM tel.agent_kills WHERE host = $1 AND comm = $2 GROUP BY 1`, host, name)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var o string
		var c int
		if err := rs.Scan(&o, &c); err != nil {
			t.Fatal(err)
		}
		outcomes[o] = c
	}
	if rs.Err() != nil {
		t.Fatal(rs.Err())
	}
	t.Logf("rows by outcome: %v", outcomes)
	if rows != n || perPID != n || pending != 0 {
		t.Errorf("%d rows for %d agents (%d distinct pids, %d pending), want exactly one complete row each", rows, n, perPID, pending)
	}

	// Never early, by either daemon; how late the first daemon's were.
	killed2 := d2.findLogs(isKill)
	early, late1 := 0, 0
	for _, m := range append(killed1, killed2...) {
		dl, sig := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
		if sig < dl {
			early++
			t.Errorf("pid %d signalled %s before its deadline", num(m["pid"]), time.Duration(dl-sig))
		}
	}
	// The first daemon's first signals, from its pending lines (the kill
	// lines only cover the kills it finished): never early, and on time.
	var lateMax int64
	for _, m := range firsts {
		dl, sig := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
		if dl == 0 || sig < dl {
			early++
			t.Errorf("pending line %v: first signal before the deadline", m)
		}
		lateMax = max(lateMax, sig-dl)
		if sig-dl > int64(time.Second) {
			late1++
		}
	}
	var again int64
	for _, m := range killed2 {
		again = max(again, num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"]))
	}
	t.Logf("first daemon's first signals: latest %s after its deadline; second daemon's re-kills: latest %s after the deadline (the restart)",
		time.Duration(lateMax), time.Duration(again))
	resumed := d2.findLogs(func(m map[string]any) bool { return m["msg"] == "kill rows left pending by an earlier run" })
	t.Logf("second daemon: %d kill lines; %v", len(killed2), resumed)
	lost := n - min(perPID, n) + pending
	// The row says what happened in words that do not change from run to
	// run (the figures are in the log above): the table is checked against
	// it on every run.
	recordFault(t, faultRow{
		Fault:    "daemon SIGKILLed mid mass kill",
		Produced: fmt.Sprintf("%d TERM-ignoring agents due together; SIGKILL to the daemon at its first complete kill, the rest still alive; a new daemon on the same state dir and database", n),
		Did:      "first signals on time, none early; the new daemon killed the survivors on start and completed every pending row under its id, once: one row per agent, none pending",
		RowsLost: lost, KillsLate: late1 + early, KillsMissed: missed,
	})
}

// TestIntegrationCrashPendingGone: a daemon SIGKILLed mid-grace leaves a
// pending row, and the process dies before the next daemon starts (the
// SIGKILL came from elsewhere, or it honoured the SIGTERM late). The next
// daemon completes the row, once, as interrupted, with alive_at_restart 0:
// from the spool when it was not delivered (no database), from PostgreSQL
// when it was.
func TestIntegrationCrashPendingGone(t *testing.T) {
	if ranApart(t) {
		return
	}
	for _, withDB := range []bool{false, true} {
		dir := t.TempDir()
		args := []string{"--max-age", maxAge.String(), "--state-dir", dir, "--host-id", "gone-" + strconv.FormatBool(withDB)}
		var conn *pgx.Conn
		if withDB {
			var db string
			db, conn = testDB(t)
			args = append(args, "--database-url", db)
		}
		d1 := startDaemon(t, append(args, "--kill-grace", "1h")...)
		d1.stopSignal = syscall.SIGKILL
		a := startAgent(t, "claude", "-ignore-term")
		d1.waitTracked(t, a.pid)
		m := d1.waitLog(t, maxAge+30*time.Second, func(m map[string]any) bool {
			return m["msg"] == "kill record pending" && num(m["pid"]) == int64(a.pid)
		})
		const q = "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome = $2"
		if withDB && waitCount(t, conn, 20*time.Second, 1, q, a.pid, "pending") != 1 {
			t.Fatal("the pending row did not reach the database")
		}
		d1.stop(t)
		killPid(a.pid)
		a.waitExit(t, 10*time.Second)

		d2 := startDaemon(t, append(args, "--kill-grace", "1s")...)
		d2.waitLog(t, 30*time.Second, func(m map[string]any) bool {
			return m["msg"] == "kill rows left pending by an earlier run" && num(m["completed_interrupted"]) == 1
		})
		if withDB {
			if n := waitCount(t, conn, 20*time.Second, 1, q, a.pid, "interrupted"); n != 1 {
				t.Errorf("%d interrupted rows for the agent in the database, want 1", n)
			}
			var rows int
			var alive float64
			var id string
			if err := conn.QueryRow(context.Background(), `SELECT count(*) OVER (), (details->>'alive_at_restart')::float8, id::text
				FROM tel.agent_kills WHERE pid = $1`, a.pid).Scan(&rows, &alive, &id); err != nil {
				t.Fatal(err)
			}
			if rows != 1 || alive != 0 || id != m["id"] {
				t.Errorf("%d rows, alive_at_restart %v, id %s; want one row, 0, the pending row's id %v", rows, alive, id, m["id"])
			}
		}
		d2.stop(t)
		if !withDB {
			recs := killRecords(t, dir, a.pid)
			if len(recs) != 1 || recs[0].ID != m["id"] || recs[0].Kill.Outcome != "interrupted" ||
				recs[0].Kill.Details["alive_at_restart"] != 0 || recs[0].Kill.FinalSignal != "TERM" {
				t.Errorf("spool holds %+v for the agent, want the pending row %v completed as interrupted", recs, m["id"])
			}
		}
	}
	recordFault(t, faultRow{
		Fault:    "daemon SIGKILLed mid-grace, the process gone before the restart",
		Produced: "SIGKILL to the daemon during a 1 h kill grace, the TERM-ignoring agent then SIGKILLed by the test, a new daemon on the same state dir (with and without PostgreSQL)",
		Did:      "completed the pending row under its id as outcome interrupted, alive_at_restart 0: from the spool, and from PostgreSQL once delivered",
	})
}
