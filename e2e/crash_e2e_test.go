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
	pendingLines := len(d1.findLogs(func(m map[string]any) bool { return m["msg"] == "kill record pending" }))
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
	waitFor(t, 60*time.Second, func() bool { return query() == nil && perPID >= n && pending == 0 && rows >= n },
		"every agent's row complete in the database")
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
	for _, m := range killed1 {
		if num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"]) > int64(time.Second) {
			late1++
		}
	}
	resumed := d2.findLogs(func(m map[string]any) bool { return m["msg"] == "kill rows left pending by an earlier run" })
	t.Logf("second daemon: %d kill lines; %v", len(killed2), resumed)
	lost := n - min(perPID, n) + pending
	recordFault(t, faultRow{
		Fault:    "daemon SIGKILLed mid mass kill",
		Produced: fmt.Sprintf("%d TERM-ignoring agents due together; SIGKILL to the daemon at its first complete kill, %d agents still alive; a new daemon on the same state dir and database", n, alive),
		Did: fmt.Sprintf("the new daemon killed the %d survivors at once (past their deadlines) and completed the pending rows: %v",
			alive, outcomes),
		RowsLost: lost, KillsLate: late1 + early, KillsMissed: missed,
	})
}
