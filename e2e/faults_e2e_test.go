package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
)

// The disk and the database fail under a running daemon, for real: a
// tmpfs filled to ENOSPC, a read-only bind mount, a revoked grant, a
// locked table, PostgreSQL stopped in the middle of a delivery. Kills go on
// on time and no row is lost; each test records its row of the fault table
// (faulttable_test.go, docs/reliability.md).

// mount runs mount(8) with args; the test fails if it fails.
func mount(t testing.TB, args ...string) {
	t.Helper()
	must(t, "mount", args...)
}

// umountAtCleanup unmounts dir when the test ends (lazily: a daemon still
// holding a file there does not keep it).
func umountAtCleanup(t testing.TB, dir string) {
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// tinyTmpfs mounts a tmpfs of size (e.g. "2m") on a new directory.
func tinyTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	mount(t, "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir)
	umountAtCleanup(t, dir)
	return dir
}

// fillDisk writes a file in dir until the file system says ENOSPC, and
// returns its path: removing it frees the disk.
func fillDisk(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v, want ENOSPC", dir, err)
			}
			break
		}
	}
	// The last pages: a byte at a time until not even one fits.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	return path
}

// readOnlyBind bind-mounts src read-only on a new directory and returns it
// (remountBind makes it writable again).
func readOnlyBind(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	mount(t, "--bind", src, dst)
	umountAtCleanup(t, dst)
	mount(t, "-o", "remount,bind,ro", dst)
	if err := os.WriteFile(filepath.Join(dst, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing in the read-only bind mount: %v, want EROFS", err)
	}
	return dst
}

// killTally waits (generously) for each agent's kill line and counts the
// kills that came more than a second after their deadline or before it
// (by the daemon's record and the agent's own clock), and the agents never
// killed.
func killTally(t testing.TB, d *testDaemon, agents []*agent, maxAge time.Duration) (late, missed int) {
	t.Helper()
	for _, a := range agents {
		var m map[string]any
		s := d.logStream
		s.mu.Lock()
		s.waitCond(maxAge+30*time.Second, func() bool {
			for _, l := range s.logs {
				if killOf(a.pid)(l) {
					m = l
					return true
				}
			}
			return false
		})
		s.mu.Unlock()
		if m == nil {
			t.Errorf("agent %d was never killed", a.pid)
			missed++
			continue
		}
		deadline, signalled := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
		early := signalled < deadline
		if tt, ok := a.termAt(); ok && tt < a.t0+int64(maxAge) {
			early = true
		}
		if early || time.Duration(signalled-deadline) > time.Second {
			t.Errorf("agent %d signalled %s after its deadline (early: %v)", a.pid, time.Duration(signalled-deadline), early)
			late++
		}
	}
	return late, missed
}

// eventually polls cond until it holds or timeout passes, and says which.
func eventually(timeout time.Duration, cond func() bool) bool {
	for end := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// health is the daemon's /healthz.
func (d *testDaemon) health(t testing.TB) healthView {
	t.Helper()
	var h healthView
	d.get(t, "/healthz", &h)
	return h
}

// waitHealth waits until /healthz satisfies ok and returns it.
func waitHealthz(t testing.TB, d *testDaemon, what string, ok func(healthView) bool) healthView {
	t.Helper()
	var h healthView
	if !eventually(60*time.Second, func() bool { h = d.health(t); return ok(h) }) {
		t.Errorf("/healthz not %s within a minute: status %q, degraded %q", what, h.Status, h.Degraded)
	}
	return h
}

// degradedBy reports whether h is degraded with a cause containing s.
func degradedBy(s string) func(healthView) bool {
	return func(h healthView) bool {
		return h.Status == "degraded" && strings.Contains(strings.Join(h.Degraded, "; "), s)
	}
}

func healthOK(h healthView) bool { return h.Status == "ok" && len(h.Degraded) == 0 }

// TestIntegrationFaultSpoolDiskFull: the spool's disk (a 2 MB tmpfs) fills
// up mid-run. Kills stay on time, their rows reach PostgreSQL from memory,
// /healthz is degraded naming ENOSPC (warned once), and when the disk is
// freed the held rows are written out and /healthz is ok again.
func TestIntegrationFaultSpoolDiskFull(t *testing.T) {
	if ranApart(t) {
		return
	}
	db := testDatabase(t)
	state := tinyTmpfs(t, "2m")
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", db, "--summary-interval", "1s",
		"--state-dir", state, "--host-id", "fault-enospc")
	filler := fillDisk(t, state)
	// The next snapshots run into the full disk.
	d.waitLog(t, 30*time.Second, lineHas("no space left on device"))
	var agents []*agent
	for range 3 {
		agents = append(agents, startAgent(t, "claude"))
	}
	late, missed := killTally(t, d, agents, maxAge)
	lost := lostKillRows(t, dbConn(t, db), 30*time.Second, agents, "in PostgreSQL while the disk is full")
	h := waitHealthz(t, d, "degraded by ENOSPC", degradedBy("no space left on device"))
	t.Logf("degraded: %v", h.Degraded)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, 30*time.Second, msgHas("the disk takes writes again"))
	waitHealthz(t, d, "ok after the disk is freed", healthOK)
	warnedOnce(t, d, "spool ENOSPC warnings", warnStarts("spool: the disk refuses writes (no space left on device)"))
	if l := d.findLogs(msgHas("spool kill record")); len(l) > 0 {
		t.Errorf("a kill record was not spooled: %v", l[0])
	}
	recordFault(t, faultRow{
		Fault:    "spool disk full mid-run",
		Produced: "state dir on a 2 MB tmpfs, filled to ENOSPC by a file while the daemon runs; 3 agents due; the file removed",
		Did: "kills on time; rows held in memory and delivered to PostgreSQL from there; /healthz degraded naming " +
			"ENOSPC, one warning; held rows written out once the file was removed, /healthz ok",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}

// TestIntegrationFaultStateDirReadOnly: the state dir is a read-only bind
// mount when the daemon starts (no database: the spool is the store). It
// starts anyway and reaps on time; rows are held in memory
// (supervisor_spool_rows_held), /healthz is degraded naming EROFS; when the
// mount is made writable the rows and the session state are written out.
func TestIntegrationFaultStateDirReadOnly(t *testing.T) {
	if ranApart(t) {
		return
	}
	src := t.TempDir()
	state := readOnlyBind(t, src)
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--summary-interval", "1s", "--state-dir", state, "--control-socket", sock)
	// A lease given while the state dir is read-only: in force, kept in
	// memory, saved once it can be.
	leased := startAgent(t, "claude")
	d.waitTracked(t, leased.pid)
	_, errs, code := ctl(t, sock, "extend", strconv.Itoa(leased.pid), "1h")
	if code != 1 || !strings.Contains(errs, "could not be saved") || !strings.Contains(errs, "kept in memory") {
		t.Errorf("extend on a read-only state dir: exit %d, %q; want 1 saying it is kept in memory", code, errs)
	}
	var agents []*agent
	for range 3 {
		agents = append(agents, startAgent(t, "claude"))
	}
	late, missed := killTally(t, d, agents, maxAge)
	waitHealthz(t, d, "degraded by EROFS", degradedBy("read-only file system"))
	waitFor(t, 30*time.Second, func() bool { return metricValue(t, d, "supervisor_spool_rows_held") >= 3 },
		"supervisor_spool_rows_held holding the 3 kill rows")

	mount(t, "-o", "remount,bind,rw", state)
	d.waitLog(t, 30*time.Second, msgHas("the disk takes writes again"))
	waitHealthz(t, d, "ok once the mount is writable", healthOK)
	waitFor(t, 30*time.Second, func() bool { return metricValue(t, d, "supervisor_spool_rows_held") == 0 }, "no rows held")
	waitFor(t, 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(src, "sessions.json"))
		return err == nil
	}, "sessions.json saved once the state dir is writable")
	waitFor(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(src, "leases.json"))
		return strings.Contains(string(b), strconv.Itoa(leased.pid))
	}, "leases.json saved with the lease once the state dir is writable")
	if !leased.alive() || len(d.findLogs(killOf(leased.pid))) > 0 {
		t.Errorf("the leased agent %d was killed: its lease was lost", leased.pid)
	}
	lost := 0
	recs, _, err := store.ReadSpool(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		n := 0
		for _, r := range recs {
			if r.Kind == store.KindKill && int(r.Kill.PID) == a.pid && r.Kill.Outcome != store.OutcomePending {
				n++
			}
		}
		if n != 1 {
			t.Errorf("agent %d: %d complete kill rows in the spool after recovery, want 1", a.pid, n)
			lost++
		}
	}
	warnedOnce(t, d, "spool warnings", warnStarts("spool: the disk refuses writes"))
	recordFault(t, faultRow{
		Fault:    "state dir read-only at start",
		Produced: "state dir a read-only bind mount (mount -o remount,bind,ro) when the daemon starts, no database; an agent extended by 1h, 3 agents due; remounted rw",
		Did: "starts and reaps on time; rows held in memory (supervisor_spool_rows_held), the lease in force and kept in memory, " +
			"/healthz degraded naming EROFS, one warning; after the remount the spool, sessions.json and leases.json are written, /healthz ok",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}

// TestIntegrationFaultRevokeInsert: the daemon's role loses INSERT on
// tel.agent_kills while it runs. The kill row is not the row's fault: it
// stays in the spool (spool.bad stays empty), one warning names the grant
// that cures it, /healthz is degraded; once granted again the row arrives.
func TestIntegrationFaultRevokeInsert(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	ctx := context.Background()
	if out, errs, code := runBounded(t, 60*time.Second, "migrate", "--database-url", db); code != 0 {
		t.Fatalf("migrate: exit %d, %s%s", code, out, errs)
	}
	role, _, roleURL := daemonRole(t, conn, db)
	state := t.TempDir()
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", roleURL, "--summary-interval", "1s",
		"--state-dir", state, "--host-id", "fault-revoke")
	waitCount(t, conn, 30*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = 'fault-revoke'")
	if _, err := conn.Exec(ctx, "REVOKE INSERT ON tel.agent_kills FROM "+role); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "claude")
	late, missed := killTally(t, d, []*agent{a}, maxAge)
	// The first refusal, however it is told.
	d.waitLog(t, 30*time.Second, lineHas("permission denied"))
	want := "permission denied on tel.agent_kills: GRANT INSERT, SELECT, DELETE ON tel.agent_kills TO " + role
	if !eventually(30*time.Second, func() bool { return len(d.findLogs(msgHas(want))) > 0 }) {
		t.Errorf("no warning %q", want)
	}
	if h := d.health(t); !eventually(30*time.Second, func() bool { h = d.health(t); return degradedBy(want)(h) }) {
		t.Errorf("/healthz %+v, want degraded naming %q", h, want)
	}
	// Two more attempts (backoff 1 s, 2 s, ...): still held, still one warning.
	from := d.lines()
	d.waitLogsFrom(t, from, 3, 30*time.Second, func(m map[string]any) bool { return m["msg"] == "snapshot" })
	if b, err := os.ReadFile(filepath.Join(state, "spool.bad")); err == nil && len(b) > 0 {
		t.Errorf("the refused row was set aside as if it were its fault:\n%s", b)
	}
	if _, err := conn.Exec(ctx, "GRANT INSERT ON tel.agent_kills TO "+role); err != nil {
		t.Fatal(err)
	}
	lost := lostKillRows(t, conn, 60*time.Second, []*agent{a}, "after the grant")
	waitHealthz(t, d, "ok after the grant", healthOK)
	warnedOnce(t, d, "permission warnings", msgHas("permission denied"))
	recordFault(t, faultRow{
		Fault:    "INSERT revoked on tel.agent_kills (42501)",
		Produced: "REVOKE INSERT ON tel.agent_kills FROM the daemon's role while it runs; an agent due; GRANT again",
		Did: "kill on time; the row stays in the spool (spool.bad empty), retried with backoff; one warning naming the " +
			"GRANT, /healthz degraded; delivered after the GRANT",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}

// TestIntegrationFaultStatementTimeout: a stuck database (tel.agent_kills
// locked by another transaction) fails the daemon's batch after
// --db-statement-timeout instead of stalling delivery: a warning names the
// timeout, the row stays in the spool and arrives once the lock is gone.
func TestIntegrationFaultStatementTimeout(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	ctx := context.Background()
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", db, "--summary-interval", "1s",
		"--host-id", "fault-timeout", "--db-statement-timeout", "1s")
	waitCount(t, conn, 30*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = 'fault-timeout'")
	locker := dbConn(t, db)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE tel.agent_kills IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "claude")
	late, missed := killTally(t, d, []*agent{a}, maxAge)
	d.waitLog(t, 30*time.Second, msgHas("statement timeout on tel.agent_kills"))
	waitHealthz(t, d, "degraded by the timeout", degradedBy("statement timeout"))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	lost := lostKillRows(t, conn, 60*time.Second, []*agent{a}, "after the lock is gone")
	waitHealthz(t, d, "ok after the lock is gone", healthOK)
	recordFault(t, faultRow{
		Fault:    "database stuck (statement timeout, 57014)",
		Produced: "LOCK TABLE tel.agent_kills IN ACCESS EXCLUSIVE MODE held by another transaction; --db-statement-timeout 1s; an agent due; the lock released",
		Did: "kill on time; each batch fails after 1 s and stays in the spool; one warning naming the timeout, " +
			"/healthz degraded; delivered once the lock is gone",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}

// prefill spools the i-th of the rows TestIntegrationFaultPostgresRestartMidBatch
// delivers: every tenth a kill row of PID 1,000,000 + i, the others
// snapshots with {"n": 1} in their details.
func prefill(sp *store.Spool, i int, now time.Time) error {
	r := store.Record{Kind: store.KindSnapshot, ID: store.NewID(), Host: "fault-midbatch", Created: now.Add(time.Duration(i) * time.Microsecond)}
	if i%10 == 9 {
		r.Kind, r.Kill = store.KindKill, &store.KillRow{PID: int32(1_000_000 + i), Comm: "claude", Rule: "claude", Outcome: "killed",
			Reason: "max_age", StartedAt: now, Deadline: now, SignalledAt: now}
	} else {
		r.Snapshot = &store.SnapshotRow{CheckType: store.CheckType, Status: "ok", Details: json.RawMessage(`{"n":1}`)}
	}
	_, err := sp.Append(r)
	return err
}

// TestIntegrationFaultPostgresRestartMidBatch: PostgreSQL is stopped while
// the daemon delivers 50,000 spooled rows in batches, agents are reaped
// meanwhile, and it is started again: every row arrives exactly once.
func TestIntegrationFaultPostgresRestartMidBatch(t *testing.T) {
	if ranApart(t) {
		return
	}
	c := newCluster(t)
	dsn := c.url(c.password)
	state := t.TempDir()
	const snaps, kills = 45000, 5000 // prefill's mix
	sp, err := store.OpenSpool(state, 100000)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// Appended from many goroutines: they share fsyncs (group commit).
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < snaps+kills; i += 64 {
				if err := prefill(sp, i, now); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sp.Close()

	conn := dbConn(t, dsn)
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", dsn, "--summary-interval", "1h",
		"--state-dir", state, "--spool-max-rows", "100000", "--host-id", "fault-midbatch")
	var before int
	waitFor(t, 60*time.Second, func() bool {
		conn.QueryRow(context.Background(), "SELECT count(*) FROM tel.system_health WHERE host = 'fault-midbatch' AND details->>'n' = '1'").Scan(&before)
		return before > 0
	}, "the first batch delivered")
	c.stop(t)
	if before >= snaps {
		t.Fatalf("all %d snapshots were delivered before the stop: not mid-delivery", before)
	}
	d.waitLog(t, 30*time.Second, msgHas("database unreachable"))
	agents := []*agent{startAgent(t, "claude"), startAgent(t, "claude")}
	late, missed := killTally(t, d, agents, maxAge)
	waitHealthz(t, d, "degraded while the database is down", degradedBy("database unreachable"))
	c.start(t)

	conn = dbConn(t, dsn)
	gotSnaps := waitCount(t, conn, 120*time.Second, snaps, "SELECT count(*) FROM tel.system_health WHERE host = 'fault-midbatch' AND details->>'n' = '1'")
	gotKills := waitCount(t, conn, 60*time.Second, kills, "SELECT count(*) FROM tel.agent_kills WHERE host = 'fault-midbatch' AND pid >= 1000000")
	waitFor(t, 60*time.Second, func() bool { return healthOK(d.health(t)) }, "/healthz ok after the restart")
	dupSnaps := queryInt(t, conn, "SELECT count(*) - count(DISTINCT row_id) FROM tel.system_health WHERE host = 'fault-midbatch' AND details->>'n' = '1'")
	dupKills := queryInt(t, conn, "SELECT count(*) - count(DISTINCT id) FROM tel.agent_kills WHERE host = 'fault-midbatch'")
	if gotSnaps != snaps || gotKills != kills || dupSnaps+dupKills != 0 {
		t.Errorf("after the restart: %d of %d snapshots, %d of %d kill rows, %d duplicates; want every row once",
			gotSnaps, snaps, gotKills, kills, dupSnaps+dupKills)
	}
	lost := max(snaps-gotSnaps, 0) + max(kills-gotKills, 0) + lostKillRows(t, conn, 60*time.Second, agents, "after the restart")
	t.Logf("%d of %d snapshots delivered when PostgreSQL was stopped", before, snaps)
	recordFault(t, faultRow{
		Fault:    "PostgreSQL stopped and started mid-batch",
		Produced: "50,000 spooled rows delivered in batches of 500; pg_ctl stop -m fast once the first are in, 2 agents due, pg_ctl start",
		Did: "kills on time; the cut batch and the rest stay in the spool, retried with backoff, /healthz degraded; " +
			"after the start every row delivered once (ids: ON CONFLICT DO NOTHING), none duplicated",
		RowsLost: lost + dupSnaps + dupKills, KillsLate: late, KillsMissed: missed,
	})
}
