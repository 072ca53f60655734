package resource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// ProcReader reads each member's usage with two cheap system calls:
//
//   - CPU time: clock_gettime(2) on the process's CPU-time clock
//     (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), include/linux/posix-timers.h):
//     the sum_exec_runtime of all its threads, in nanoseconds, ~0.6 µs.
//     /proc/PID/stat has the same figure in clock ticks, but formatting its
//     52 fields costs ~5 µs.
//   - memory: pread(2) of /proc/PID/statm through a descriptor held open
//     from the member's first sample on, ~2 µs (opening it each time costs
//     8–60 µs: the procfs lookup). Anon RSS is resident minus shared pages:
//     the process's private memory (heap, stacks, JIT code), what grows
//     when an agent runs away. Shared file pages — node's binary and
//     libraries, mapped by every node of a session — are not counted once
//     per process, as an RSS sum would.
//
// Identity: the statm descriptor is opened through a directory descriptor
// of /proc/PID whose stat is checked against the member's start time, so it
// belongs to that process for good (a procfs descriptor is bound to the
// process, not the PID: once it exits reads fail with ESRCH). The CPU clock
// is read by PID first, then statm: a statm read that succeeds after it
// proves the PID still belonged to the member when the clock was read.
//
// Quiet members cost only the clock. A process's anon RSS grows only by
// page faults in its own context (do_anonymous_page and friends, or
// MAP_POPULATE/mlock faulting in for it), and that kernel time is charged
// to its own CPU clock (sum_exec_runtime counts system time): every new
// page costs at least the clearing of it. So while a member's CPU clock
// has moved less than cpuSlack since its last statm read, its memory can
// have grown by at most what clearing pages at memory bandwidth does in
// cpuSlack — 250 µs at 30 GB/s (clear_huge_page, a fast machine) is under
// 8 MB — and the last figure is kept; statm is read again past that, and
// after refreshEvery reads or refreshAfter (10 s) regardless, whichever
// comes first: reclaim can shrink a quiet process (swap, KSM), and a few
// paths grow one without its own CPU (process_vm_writev or /proc/PID/mem
// writes by another process, a userfaultfd monitor, khugepaged's collapse,
// swapoff), so a quiet figure is at most that old. Most members of an agent session are idle or nearly so
// between samples (MCP servers, shells, watchers, timers): this halves
// their cost, and it is what keeps sampling under 0.5 % of a core at 100
// sessions of 20 (BENCHMARKS.md). A PID reused by a process whose CPU
// clock happens to lie within cpuSlack of the old one would read the old
// figure once; the table drops the member at its exit event anyway.
//
// Descriptors are held for at most a quarter of RLIMIT_NOFILE, and only
// with a number below half of it — the rule of the reaper's pidfds
// (reap.Pins: the kernel hands out the lowest free descriptor, so a number
// at or above that cap means every one below is in use): whatever the
// sampler holds, the reaper keeps the upper half for a mass or tree kill
// and its last eighth in reserve. Beyond that a member is read by opening
// its files each time. ProcReader is not safe for concurrent use.
type ProcReader struct {
	root    string
	page    int64
	buf     []byte
	path    []byte
	held    map[memberKey]*heldFD
	maxHeld int
	fdCap   int // a statm descriptor numbered at or above it is not held
	gen     uint64
	// refreshEvery bounds how many reads in a row an idle member's memory
	// is taken from its last statm read; 0 reads statm every time.
	refreshEvery uint8
	// refreshAfter bounds, in time, how old a reused figure may be
	// (monotonic ns; now reads the clock).
	refreshAfter int64
	now          func() int64
}

type heldFD struct {
	fd  int
	gen uint64 // the last Sweep generation that read it
	// The last statm read: the CPU clock then, the memory, and how many
	// reads since took it as it was (idle).
	cpu    uint64
	mem    int64
	skips  uint8
	at     int64 // when statm was read (now's clock)
	cached bool
}

// cpuSlack: CPU a member may use before its statm is read again (see
// ProcReader).
const cpuSlack = 250_000 // ns

// defaultRefresh: an idle member's statm is read at least every 15th
// sample (30 s at the default 2 s interval).
const defaultRefresh = 15

// NewProcReader returns a reader of the procfs at root ("/proc").
func NewProcReader(root string) *ProcReader {
	limit := 1024
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur > 0 && rl.Cur < 1<<30 {
		limit = int(rl.Cur)
	}
	return &ProcReader{root: root, page: int64(os.Getpagesize()), buf: make([]byte, 512),
		path: make([]byte, 0, len(root)+32), held: map[memberKey]*heldFD{}, maxHeld: limit / 4,
		fdCap: min(limit/2, 1<<16), refreshEvery: defaultRefresh, refreshAfter: int64(10 * time.Second), now: monoNow}
}

// cpuClock is the clock id of pid's process CPU-time clock.
func cpuClock(pid int32) int32 { return (^pid)<<3 | 2 }

// Read reads pid's usage and checks that it is the process that started at
// start (a PID reused meanwhile is another process: tracker.ErrGone).
func (r *ProcReader) Read(pid int32, start tracker.Start) (Usage, error) {
	k := memberKey{pid, start.NS}
	h := r.held[k]
	if h == nil {
		fd, err := r.open(pid, start)
		if err != nil {
			return Usage{}, err
		}
		h = &heldFD{fd: fd}
		if len(r.held) >= r.maxHeld || fd >= r.fdCap {
			defer unix.Close(fd) // over the budget: not kept
		} else {
			r.held[k] = h
		}
	}
	h.gen = r.gen
	var ts unix.Timespec
	if err := unix.ClockGettime(cpuClock(pid), &ts); err != nil {
		r.drop(k)
		return Usage{}, gone(fmt.Sprintf("cpu clock of %d", pid), "clock_gettime", err)
	}
	cpu := uint64(ts.Nano())
	now := r.now()
	if h.cached && cpu >= h.cpu && cpu-h.cpu < cpuSlack && h.skips < r.refreshEvery && now-h.at < r.refreshAfter {
		h.skips++
		return Usage{CPUNanos: cpu, MemoryBytes: h.mem}, nil
	}
	n, err := preadRetry(h.fd, r.buf)
	if err != nil {
		r.drop(k)
		return Usage{}, gone(fmt.Sprintf("%s/%d/statm", r.root, pid), "read", err)
	}
	resident, shared, err := ParseStatm(r.buf[:n])
	if err != nil {
		return Usage{}, err
	}
	h.cpu, h.mem, h.skips, h.cached, h.at = cpu, max(resident-shared, 0)*r.page, 0, true, now
	return Usage{CPUNanos: cpu, MemoryBytes: h.mem}, nil
}

// open opens pid's statm through /proc/PID, checked to be the process that
// started at start.
func (r *ProcReader) open(pid int32, start tracker.Start) (int, error) {
	r.path = append(r.path[:0], r.root...)
	r.path = append(r.path, '/')
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	name := string(r.path)
	dir, err := unix.Open(name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, gone(name, "open", err)
	}
	defer unix.Close(dir)
	sfd, err := unix.Openat(dir, "stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, gone(name+"/stat", "open", err)
	}
	n, err := preadRetry(sfd, r.buf)
	unix.Close(sfd)
	if err != nil {
		return -1, gone(name+"/stat", "read", err)
	}
	st, err := ParseStat(r.buf[:n])
	if err != nil {
		return -1, err
	}
	if !tracker.FromTicks(st.StartTicks).Same(start) {
		return -1, fmt.Errorf("pid %d: started at tick %d, not the member: %w", pid, st.StartTicks, tracker.ErrGone)
	}
	fd, err := unix.Openat(dir, "statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, gone(name+"/statm", "open", err)
	}
	return fd, nil
}

func (r *ProcReader) drop(k memberKey) {
	if h := r.held[k]; h != nil {
		unix.Close(h.fd)
		delete(r.held, k)
	}
}

// Sweep closes the descriptors of members not read since the last Sweep:
// they left their session or exited. The sampler calls it after each
// sample.
func (r *ProcReader) Sweep() {
	for k, h := range r.held {
		if h.gen != r.gen {
			unix.Close(h.fd)
			delete(r.held, k)
		}
	}
	r.gen++
}

// Held is the number of descriptors held open.
func (r *ProcReader) Held() int { return len(r.held) }

func preadRetry(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// gone maps a vanished process (ENOENT, ESRCH) to tracker.ErrGone. A CPU
// clock of a PID no process holds is EINVAL (posix_cpu_clock_get).
func gone(path, op string, err error) error {
	e := &fs.PathError{Op: op, Path: path, Err: err}
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) || (op == "clock_gettime" && errors.Is(err, syscall.EINVAL)) {
		return fmt.Errorf("%w: %w", tracker.ErrGone, e)
	}
	return e
}

var monoStart = time.Now()

// monoNow is a monotonic clock in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoStart)) }
