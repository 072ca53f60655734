package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
)

// Disk faults that come while the daemon runs and go again: the state dir
// turning read-only, and fsync failing.
//
// Neither comes from a bind mount or a block device here. The kernel
// refuses to remount read-only (EBUSY) a mount with a file open for
// writing, and the daemon always has two there (its spool and its lock):
// under a running daemon a state dir turns read-only only by the kernel's
// own hand (ext4 remounting itself read-only after an I/O error, an
// emergency remount), which is not undone while it is mounted, and this
// kernel has no device-mapper (no error target to fail a device on demand)
// and no fault injection. So the state dir is a FUSE file system (faultfsC,
// in the manner of CharybdeFS): a passthrough to a directory that, on a
// signal, answers every change with EROFS (writes to files already open
// included) or every fsync with EIO, as a read-only mount or a failing
// disk would, and on another goes back to passing everything through. The
// daemon's system calls fail for real; only the cause is made.

// faultFS is a mounted faultfsC.
type faultFS struct {
	dir, backing string
	srv          *agent
}

// mountFaultFS mounts faultfsC on a new directory, over a new backing
// directory.
func mountFaultFS(t testing.TB) *faultFS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		failOrSkip(t, "needs FUSE (/dev/fuse): %v", err)
	}
	bin := buildC(t, "faultfs", faultfsC)
	f := &faultFS{dir: t.TempDir(), backing: t.TempDir()}
	f.srv = runAgent(t, exec.Command(bin, f.backing, f.dir))
	// Unmounted before the server is killed (cleanups run last first).
	t.Cleanup(func() { exec.Command("umount", "-l", f.dir).Run() })
	if _, ok := f.srv.out.take("ready", patient(30*time.Second)); !ok {
		t.Fatal("faultfs did not mount (its stderr is in the test's)")
	}
	return f
}

// probe writes, fsyncs and removes a file in the mount, and returns the
// first error.
func (f *faultFS) probe() error {
	p := filepath.Join(f.dir, ".probe")
	fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write([]byte("x"))
	if err == nil {
		err = fh.Sync()
	}
	fh.Close()
	if err == nil {
		err = os.Remove(p)
	}
	return err
}

// set sends the server sig and waits until a probe fails with want (nil:
// succeeds).
func (f *faultFS) set(t testing.TB, sig syscall.Signal, want error) {
	t.Helper()
	if err := syscall.Kill(f.srv.pid, sig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		err := f.probe()
		return errors.Is(err, want) || err == nil && want == nil
	}, "faultfs answering %v after %v", want, sig)
	if want == nil {
		os.Remove(filepath.Join(f.backing, ".probe"))
	}
}

// completeKillRows counts each agent's complete (not pending) kill rows in
// the spool in dir.
func completeKillRows(t testing.TB, dir string, agents []*agent) map[int]int {
	t.Helper()
	recs, _, err := store.ReadSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := map[int]int{}
	for _, a := range agents {
		for _, r := range recs {
			if r.Kind == store.KindKill && int(r.Kill.PID) == a.pid && r.Kill.Outcome != store.OutcomePending {
				n[a.pid]++
			}
		}
	}
	return n
}

// lateDisk is a state dir whose disk can fail on demand.
type lateDisk struct {
	dir     string        // the state dir
	backing string        // where its files are read from
	cause   syscall.Errno // the failure
	fail    func()        // makes the disk fail (returning once it does)
	recover func()        // makes it work again (returning once it does)
}

// fuseDisk is a faultfs mount failing with sig (whose errno is cause).
func fuseDisk(t testing.TB, sig syscall.Signal, cause syscall.Errno) lateDisk {
	fs := mountFaultFS(t)
	return lateDisk{dir: fs.dir, backing: fs.backing, cause: cause,
		fail: func() { fs.set(t, sig, cause) }, recover: func() { fs.set(t, syscall.SIGUSR2, nil) }}
}

// lateDiskFault runs the scenario the tests share, with the disk failing
// while the daemon runs: PostgreSQL (a cluster of the test's) stopped, so
// that rows can only be held; the fault; 3 agents due; the fault gone,
// then PostgreSQL started. It returns rows lost, kills late and kills
// missed.
func lateDiskFault(t *testing.T, host string, disk lateDisk) (lost, late, missed int) {
	t.Helper()
	cause := disk.cause
	c := newCluster(t)
	dsn := c.url(c.password)
	conn := dbConn(t, dsn)
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", dsn, "--summary-interval", "1s",
		"--state-dir", disk.dir, "--host-id", host)
	waitCount(t, conn, 60*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = $1", host)
	c.stop(t)
	d.waitLog(t, 30*time.Second, msgHas("database unreachable"))

	disk.fail()
	var agents []*agent
	for range 3 {
		agents = append(agents, startAgent(t, "claude"))
	}
	late, missed = killTally(t, d, agents, maxAge)
	h := waitHealthz(t, d, "degraded by "+cause.Error(), degradedBy(cause.Error()))
	t.Logf("degraded: %v", h.Degraded)
	waitFor(t, 30*time.Second, func() bool { return metricValue(t, d, "supervisor_spool_rows_held") >= 3 },
		"supervisor_spool_rows_held holding the 3 kill rows")
	for pid, n := range completeKillRows(t, disk.backing, agents) {
		t.Errorf("agent %d: %d complete kill rows on the faulty disk, want them held in memory", pid, n)
	}

	disk.recover()
	d.waitLog(t, 30*time.Second, msgHas("the disk takes writes again"))
	waitFor(t, 30*time.Second, func() bool { return metricValue(t, d, "supervisor_spool_rows_held") == 0 }, "no rows held")
	written := completeKillRows(t, disk.backing, agents)
	for _, a := range agents {
		if written[a.pid] != 1 {
			t.Errorf("agent %d: %d complete kill rows written out to the spool once the disk recovered, want 1", a.pid, written[a.pid])
		}
	}
	c.start(t)
	lost = lostKillRows(t, dbConn(t, dsn), 60*time.Second, agents, "once the disk recovered and PostgreSQL started")
	waitHealthz(t, d, "ok once the disk and the database are back", healthOK)
	warnedOnce(t, d, "spool warnings naming "+cause.Error(), warnStarts("spool: the disk refuses writes ("+cause.Error()+")"))
	if l := d.findLogs(msgHas("spool kill record")); len(l) > 0 {
		t.Errorf("a kill record was not spooled: %v", l[0])
	}
	return lost, late, missed
}

// lateDiskTest is a late-disk-fault test: in its own process (ranApart),
// the disk newDisk makes fails and recovers in lateDiskFault's scenario,
// and row, with its counts, goes to the fault table.
func lateDiskTest(t *testing.T, host string, newDisk func(testing.TB) lateDisk, row faultRow) {
	t.Helper()
	if ranApart(t) {
		return
	}
	row.RowsLost, row.KillsLate, row.KillsMissed = lateDiskFault(t, host, newDisk(t))
	recordFault(t, row)
}

// TestIntegrationFaultStateDirTurnsReadOnly: the state dir turns read-only
// while the daemon runs (its spool and lock open), PostgreSQL down. Kills
// stay on time, rows are held in memory (supervisor_spool_rows_held),
// /healthz is degraded naming EROFS (warned once); writable again, the
// held rows are written out, and reach PostgreSQL once it is back.
func TestIntegrationFaultStateDirTurnsReadOnly(t *testing.T) {
	lateDiskTest(t, "fault-ro-late", func(t testing.TB) lateDisk { return fuseDisk(t, syscall.SIGUSR1, syscall.EROFS) }, faultRow{
		Fault: "state dir turns read-only while the daemon runs",
		Produced: "state dir on a FUSE passthrough (a C helper) that starts answering EROFS to every change, writes to the open spool included, " +
			"while the daemon runs and PostgreSQL is stopped; 3 agents due; then writable again, PostgreSQL started",
		Did: "kills on time; rows held in memory (supervisor_spool_rows_held), /healthz degraded naming EROFS, one warning; " +
			"once writable the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
	})
}

// TestIntegrationFaultFsyncFails: every fsync on the state dir fails (EIO)
// while the daemon runs, PostgreSQL down. Kills stay on time, the rows
// whose fsync failed are cut back and held in memory, /healthz is degraded
// naming EIO (warned once); once fsyncs succeed the held rows are written
// out, and reach PostgreSQL once it is back.
func TestIntegrationFaultFsyncFails(t *testing.T) {
	lateDiskTest(t, "fault-fsync", func(t testing.TB) lateDisk { return fuseDisk(t, syscall.SIGHUP, syscall.EIO) }, faultRow{
		Fault: "fsync failing on the state dir",
		Produced: "state dir on a FUSE passthrough (a C helper) that starts failing every fsync with EIO (writes still succeed) " +
			"while the daemon runs and PostgreSQL is stopped; 3 agents due; then fsyncs succeed again, PostgreSQL started",
		Did: "kills on time; the rows whose fsync failed cut back and held in memory (supervisor_spool_rows_held), /healthz degraded naming EIO, " +
			"one warning; once fsyncs succeed the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
	})
}

// loopDisk is an ext4 file system (no journal: a failed write-back is an
// error for fsync to report, not an abort that leaves it read-only) on a
// loop device whose backing file, sparse, lies on an 8 MB tmpfs. Filling
// the tmpfs is a device that refuses to store more: writes still land in
// the page cache, and it is the fsync that fails, with the device's
// ENOSPC. Removing the filler lets fsyncs through again.
func loopDisk(t testing.TB) lateDisk {
	t.Helper()
	needTool(t, "losetup", "mount")
	needTool(t, "mkfs.ext4", "e2fsprogs")
	under := tinyTmpfs(t, "8m")
	img := filepath.Join(under, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-O", "^has_journal", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() }) // after the unmount (cleanups run last first)
	dir := t.TempDir()
	mount(t, "-o", "errors=continue", dev, dir)
	umountAtCleanup(t, dir)
	fs := &faultFS{dir: dir}
	var filler string
	return lateDisk{dir: dir, backing: dir, cause: syscall.ENOSPC,
		fail: func() {
			filler = fillDisk(t, under)
			waitFor(t, 30*time.Second, func() bool { return errors.Is(fs.probe(), syscall.ENOSPC) }, "an fsync on %s failing with ENOSPC", dev)
		},
		recover: func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, func() bool { return fs.probe() == nil }, "fsyncs on %s succeeding again", dev)
		}}
}

// TestIntegrationFaultFsyncFailsOnDevice: fsync fails for real, from the
// block device beneath the state dir's file system (loopDisk), while the
// daemon runs, PostgreSQL down: as TestIntegrationFaultFsyncFails, with
// the kernel's own error.
func TestIntegrationFaultFsyncFailsOnDevice(t *testing.T) {
	lateDiskTest(t, "fault-fsync-dev", loopDisk, faultRow{
		Fault: "fsync failing on the device beneath the state dir",
		Produced: "state dir an ext4 (no journal) on a loop device whose sparse backing file lies on an 8 MB tmpfs, filled while the daemon runs " +
			"and PostgreSQL is stopped: writes land in the page cache, write-back and fsync fail (ENOSPC from the device); 3 agents due; " +
			"the filler removed, PostgreSQL started",
		Did: "kills on time; the rows whose fsync failed cut back and held in memory (supervisor_spool_rows_held), /healthz degraded naming ENOSPC, " +
			"one warning; once fsyncs succeed the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
	})
}
