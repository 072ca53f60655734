package e2e

import (
	"errors"
	"fmt"
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

// faultfsC is the FUSE server, written against the kernel's protocol
// (<linux/fuse.h>, no libfuse): `faultfs BACKING MOUNTPOINT` mounts itself
// on MOUNTPOINT, passing every operation through to BACKING, prints
// "ready", and serves until unmounted. SIGUSR1 makes it read-only (EROFS
// for every write, create, truncate, chmod, unlink, rename, mkdir and
// open for writing), SIGHUP makes every fsync fail with EIO, SIGUSR2 ends
// either. Single-threaded, one directory level: enough for a state dir.
const faultfsC = `
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

// The fault: 0 none, 1 read-only (EROFS for every change), 2 fsync fails
// (EIO). SIGUSR1, SIGHUP and SIGUSR2 set 1, 2 and 0.
static volatile sig_atomic_t fault;
static void onsig(int sig) { fault = sig == SIGUSR1 ? 1 : sig == SIGHUP ? 2 : 0; }

static int dev;
static char **paths; // by node id: the backing path ("" once gone)
static size_t npaths;

static uint64_t node(const char *path) {
	for (size_t i = 1; i < npaths; i++)
		if (strcmp(paths[i], path) == 0) return i;
	paths = realloc(paths, (npaths + 1) * sizeof *paths);
	paths[npaths] = strdup(path);
	return npaths++;
}

static void reply(uint64_t unique, int err, const void *a, size_t alen, const void *b, size_t blen) {
	struct fuse_out_header h = { sizeof h + alen + blen, err, unique };
	struct iovec iov[3] = { { &h, sizeof h }, { (void *)a, alen }, { (void *)b, blen } };
	if (writev(dev, iov, 3) < 0 && errno != ENOENT) perror("faultfs: reply");
}

static void fillattr(struct fuse_attr *a, uint64_t ino, const struct stat *st) {
	memset(a, 0, sizeof *a);
	a->ino = ino; a->size = st->st_size; a->blocks = st->st_blocks;
	a->atime = st->st_atim.tv_sec; a->atimensec = st->st_atim.tv_nsec;
	a->mtime = st->st_mtim.tv_sec; a->mtimensec = st->st_mtim.tv_nsec;
	a->ctime = st->st_ctim.tv_sec; a->ctimensec = st->st_ctim.tv_nsec;
	a->mode = st->st_mode; a->nlink = st->st_nlink; a->uid = st->st_uid; a->gid = st->st_gid;
	a->rdev = st->st_rdev; a->blksize = st->st_blksize;
}

// entry answers a LOOKUP, CREATE or MKDIR of path (with extra after it).
static void entry(uint64_t unique, const char *path, const void *extra, size_t elen) {
	struct stat st;
	if (lstat(path, &st) < 0) { reply(unique, -errno, NULL, 0, NULL, 0); return; }
	struct fuse_entry_out e;
	memset(&e, 0, sizeof e);
	e.nodeid = node(path);
	fillattr(&e.attr, e.nodeid, &st);
	reply(unique, 0, &e, sizeof e, extra, elen);
}

static char *child(uint64_t parent, const char *name) {
	char *p;
	if (asprintf(&p, "%s/%s", paths[parent], name) < 0) exit(1);
	return p;
}

int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: faultfs BACKING MOUNTPOINT\n"); return 2; }
	struct sigaction sa = { .sa_handler = onsig, .sa_flags = SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL); sigaction(SIGUSR2, &sa, NULL); sigaction(SIGHUP, &sa, NULL);
	paths = calloc(2, sizeof *paths);
	paths[0] = strdup(""); paths[1] = realpath(argv[1], NULL);
	npaths = 2;
	dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (dev < 0) { perror("faultfs: /dev/fuse"); return 1; }
	char opts[128];
	snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", dev);
	if (mount("faultfs", argv[2], "fuse.faultfs", MS_NOSUID | MS_NODEV, opts) < 0) { perror("faultfs: mount"); return 1; }
	printf("ready\n");
	fflush(stdout);
	static char buf[(1 << 20) + 4096];
	for (;;) {
		ssize_t n = read(dev, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN) continue;
			if (errno == ENODEV) return 0; // unmounted
			perror("faultfs: read");
			return 1;
		}
		struct fuse_in_header *in = (void *)buf;
		void *arg = buf + sizeof *in;
		uint64_t u = in->unique, id = in->nodeid;
		const char *path = id < npaths ? paths[id] : "";
		int ro = fault == 1;
		switch (in->opcode) {
		case FUSE_INIT: {
			struct fuse_init_in *ii = arg;
			struct fuse_init_out o;
			memset(&o, 0, sizeof o);
			o.major = FUSE_KERNEL_VERSION;
			o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
			o.max_readahead = ii->max_readahead;
			o.max_write = 1 << 20;
			o.max_pages = 256;
			o.flags = FUSE_MAX_PAGES | FUSE_BIG_WRITES;
			o.time_gran = 1;
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_DESTROY: reply(u, 0, NULL, 0, NULL, 0); return 0;
		case FUSE_FORGET: case FUSE_BATCH_FORGET: case FUSE_INTERRUPT: break; // no reply
		case FUSE_LOOKUP: { char *p = child(id, arg); entry(u, p, NULL, 0); free(p); break; }
		case FUSE_GETATTR: case FUSE_SETATTR: {
			if (in->opcode == FUSE_SETATTR) {
				struct fuse_setattr_in *s = arg;
				int err = 0;
				if (ro && (s->valid & (FATTR_SIZE | FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_ATIME | FATTR_MTIME))) err = EROFS;
				if (!err && (s->valid & FATTR_SIZE) && ((s->valid & FATTR_FH) ? ftruncate(s->fh, s->size) : truncate(path, s->size)) < 0) err = errno;
				if (!err && (s->valid & FATTR_MODE) && chmod(path, s->mode & 07777) < 0) err = errno;
				if (!err && (s->valid & (FATTR_UID | FATTR_GID)) &&
				    lchown(path, (s->valid & FATTR_UID) ? s->uid : (uid_t)-1, (s->valid & FATTR_GID) ? s->gid : (gid_t)-1) < 0) err = errno;
				if (err) { reply(u, -err, NULL, 0, NULL, 0); break; }
			}
			struct stat st;
			if (lstat(path, &st) < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_attr_out o;
			memset(&o, 0, sizeof o);
			fillattr(&o.attr, id, &st);
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_OPEN: case FUSE_OPENDIR: {
			struct fuse_open_in *oi = arg;
			int fl = in->opcode == FUSE_OPENDIR ? O_RDONLY | O_DIRECTORY : oi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY);
			if (ro && ((fl & O_ACCMODE) != O_RDONLY || (fl & O_TRUNC))) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			int fd = open(path, fl | O_CLOEXEC);
			if (fd < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_open_out o = { .fh = fd };
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_CREATE: {
			struct fuse_create_in *ci = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, (char *)(ci + 1));
			int fd = open(p, (ci->flags | O_CREAT | O_CLOEXEC) & ~O_NOCTTY, ci->mode & ~ci->umask);
			if (fd < 0) { reply(u, -errno, NULL, 0, NULL, 0); free(p); break; }
			struct fuse_open_out o = { .fh = fd };
			entry(u, p, &o, sizeof o);
			free(p);
			break;
		}
		case FUSE_MKDIR: {
			struct fuse_mkdir_in *mi = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, (char *)(mi + 1));
			if (mkdir(p, mi->mode & ~mi->umask) < 0) reply(u, -errno, NULL, 0, NULL, 0);
			else entry(u, p, NULL, 0);
			free(p);
			break;
		}
		case FUSE_UNLINK: case FUSE_RMDIR: {
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, arg);
			int r = in->opcode == FUSE_UNLINK ? unlink(p) : rmdir(p);
			reply(u, r < 0 ? -errno : 0, NULL, 0, NULL, 0);
			free(p);
			break;
		}
		case FUSE_RENAME: case FUSE_RENAME2: {
			uint64_t newdir;
			unsigned flags = 0;
			char *names;
			if (in->opcode == FUSE_RENAME) { struct fuse_rename_in *r = arg; newdir = r->newdir; names = (char *)(r + 1); }
			else { struct fuse_rename2_in *r = arg; newdir = r->newdir; flags = r->flags; names = (char *)(r + 1); }
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *from = child(id, names), *to = child(newdir, names + strlen(names) + 1);
			if (renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) < 0) reply(u, -errno, NULL, 0, NULL, 0);
			else {
				for (size_t i = 2; i < npaths; i++) if (strcmp(paths[i], to) == 0) paths[i][0] = 0;
				for (size_t i = 2; i < npaths; i++) if (strcmp(paths[i], from) == 0) { free(paths[i]); paths[i] = strdup(to); }
				reply(u, 0, NULL, 0, NULL, 0);
			}
			free(from); free(to);
			break;
		}
		case FUSE_READ: {
			struct fuse_read_in *r = arg;
			static char data[1 << 20];
			ssize_t got = pread(r->fh, data, r->size < sizeof data ? r->size : sizeof data, r->offset);
			reply(u, got < 0 ? -errno : 0, data, got < 0 ? 0 : got, NULL, 0);
			break;
		}
		case FUSE_WRITE: {
			struct fuse_write_in *w = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			ssize_t put = pwrite(w->fh, (char *)(w + 1), w->size, w->offset);
			struct fuse_write_out o = { .size = put < 0 ? 0 : put };
			reply(u, put < 0 ? -errno : 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_FSYNC: case FUSE_FSYNCDIR: {
			struct fuse_fsync_in *f = arg;
			if (fault == 2) { reply(u, -EIO, NULL, 0, NULL, 0); break; }
			reply(u, fsync(f->fh) < 0 ? -errno : 0, NULL, 0, NULL, 0);
			break;
		}
		case FUSE_FLUSH: reply(u, 0, NULL, 0, NULL, 0); break;
		case FUSE_RELEASE: case FUSE_RELEASEDIR: { struct fuse_release_in *r = arg; close(r->fh); reply(u, 0, NULL, 0, NULL, 0); break; }
		case FUSE_READDIR: {
			struct fuse_read_in *r = arg;
			static char out[1 << 16];
			size_t len = 0, max = r->size < sizeof out ? r->size : sizeof out;
			DIR *d = opendir(path);
			if (!d) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			uint64_t i = 0;
			for (struct dirent *de; (de = readdir(d)); i++) {
				if (i < r->offset) continue;
				size_t nl = strlen(de->d_name), sz = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nl);
				if (len + sz > max) break;
				struct fuse_dirent *fd = (void *)(out + len);
				memset(fd, 0, sz);
				fd->ino = de->d_ino; fd->off = i + 1; fd->namelen = nl; fd->type = de->d_type;
				memcpy(fd->name, de->d_name, nl);
				len += sz;
			}
			closedir(d);
			reply(u, 0, out, len, NULL, 0);
			break;
		}
		case FUSE_STATFS: {
			struct statvfs sv;
			if (statvfs(paths[1], &sv) < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_statfs_out o;
			memset(&o, 0, sizeof o);
			o.st.blocks = sv.f_blocks; o.st.bfree = sv.f_bfree; o.st.bavail = sv.f_bavail; o.st.files = sv.f_files;
			o.st.ffree = sv.f_ffree; o.st.bsize = sv.f_bsize; o.st.namelen = sv.f_namemax; o.st.frsize = sv.f_frsize;
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		default: reply(u, -ENOSYS, NULL, 0, NULL, 0);
		}
	}
}
`

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
	if n := len(d.findLogs(func(m map[string]any) bool {
		return m["level"] == "warn" && strings.HasPrefix(fmt.Sprint(m["msg"]), "spool: the disk refuses writes ("+cause.Error()+")")
	})); n != 1 {
		t.Errorf("%d spool warnings naming %q, want exactly 1 (one per cause)", n, cause.Error())
	}
	if l := d.findLogs(msgHas("spool kill record")); len(l) > 0 {
		t.Errorf("a kill record was not spooled: %v", l[0])
	}
	return lost, late, missed
}

// TestIntegrationFaultStateDirTurnsReadOnly: the state dir turns read-only
// while the daemon runs (its spool and lock open), PostgreSQL down. Kills
// stay on time, rows are held in memory (supervisor_spool_rows_held),
// /healthz is degraded naming EROFS (warned once); writable again, the
// held rows are written out, and reach PostgreSQL once it is back.
func TestIntegrationFaultStateDirTurnsReadOnly(t *testing.T) {
	if ranApart(t) {
		return
	}
	lost, late, missed := lateDiskFault(t, "fault-ro-late", fuseDisk(t, syscall.SIGUSR1, syscall.EROFS))
	recordFault(t, faultRow{
		Fault: "state dir turns read-only while the daemon runs",
		Produced: "state dir on a FUSE passthrough (a C helper) that starts answering EROFS to every change, writes to the open spool included, " +
			"while the daemon runs and PostgreSQL is stopped; 3 agents due; then writable again, PostgreSQL started",
		Did: "kills on time; rows held in memory (supervisor_spool_rows_held), /healthz degraded naming EROFS, one warning; " +
			"once writable the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}

// TestIntegrationFaultFsyncFails: every fsync on the state dir fails (EIO)
// while the daemon runs, PostgreSQL down. Kills stay on time, the rows
// whose fsync failed are cut back and held in memory, /healthz is degraded
// naming EIO (warned once); once fsyncs succeed the held rows are written
// out, and reach PostgreSQL once it is back.
func TestIntegrationFaultFsyncFails(t *testing.T) {
	if ranApart(t) {
		return
	}
	lost, late, missed := lateDiskFault(t, "fault-fsync", fuseDisk(t, syscall.SIGHUP, syscall.EIO))
	recordFault(t, faultRow{
		Fault: "fsync failing on the state dir",
		Produced: "state dir on a FUSE passthrough (a C helper) that starts failing every fsync with EIO (writes still succeed) " +
			"while the daemon runs and PostgreSQL is stopped; 3 agents due; then fsyncs succeed again, PostgreSQL started",
		Did: "kills on time; the rows whose fsync failed cut back and held in memory (supervisor_spool_rows_held), /healthz degraded naming EIO, " +
			"one warning; once fsyncs succeed the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
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
	if ranApart(t) {
		return
	}
	lost, late, missed := lateDiskFault(t, "fault-fsync-dev", loopDisk(t))
	recordFault(t, faultRow{
		Fault: "fsync failing on the device beneath the state dir",
		Produced: "state dir an ext4 (no journal) on a loop device whose sparse backing file lies on an 8 MB tmpfs, filled while the daemon runs " +
			"and PostgreSQL is stopped: writes land in the page cache, write-back and fsync fail (ENOSPC from the device); 3 agents due; " +
			"the filler removed, PostgreSQL started",
		Did: "kills on time; the rows whose fsync failed cut back and held in memory (supervisor_spool_rows_held), /healthz degraded naming ENOSPC, " +
			"one warning; once fsyncs succeed the held rows written out to the spool, then delivered to PostgreSQL, /healthz ok",
		RowsLost: lost, KillsLate: late, KillsMissed: missed,
	})
}
