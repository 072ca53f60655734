package resource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// Measure says which memory figure ProcReader reports.
type Measure int

// The memory measures. Their costs, measured on this project's 2-core VM
// (README, Resource guard), decided the default.
const (
	// AnonRSS is resident minus shared pages from /proc/PID/statm: the
	// process's private, anonymous memory (heap, stacks, JIT), what grows
	// when an agent runs away. Shared file pages (node's binary and
	// libraries, mapped by every node of a session) are not counted once
	// per process, as an RSS sum would. One extra small read per process.
	AnonRSS Measure = iota
	// RSS is field 24 of /proc/PID/stat: resident pages, file-backed ones
	// included. Free (the same read as the CPU ticks) but counts every
	// shared page once per process that maps it.
	RSS
)

// ProcReader reads usage from a procfs mount, through one reused buffer:
// /proc/PID/stat (utime, stime, starttime, rss) and, for AnonRSS,
// /proc/PID/statm. It is not safe for concurrent use.
type ProcReader struct {
	root    string
	measure Measure
	page    int64
	buf     []byte
	path    []byte
}

// NewProcReader returns a reader of the procfs at root ("/proc").
func NewProcReader(root string, m Measure) *ProcReader {
	return &ProcReader{root: root, measure: m, page: int64(os.Getpagesize()), buf: make([]byte, 1024),
		path: make([]byte, 0, len(root)+32)}
}

// Read reads pid's usage and checks that it is the process that started at
// start (a PID reused meanwhile is another process: tracker.ErrGone).
func (r *ProcReader) Read(pid int32, start tracker.Start) (Usage, error) {
	b, err := r.readFile(pid, "/stat")
	if err != nil {
		return Usage{}, err
	}
	st, err := ParseStat(b)
	if err != nil {
		return Usage{}, err
	}
	if !tracker.FromTicks(st.StartTicks).Same(start) {
		return Usage{}, fmt.Errorf("pid %d: started at tick %d, not the member: %w", pid, st.StartTicks, tracker.ErrGone)
	}
	u := Usage{Ticks: st.UTime + st.STime, MemoryBytes: st.RSSPages * r.page}
	if r.measure == AnonRSS {
		b, err := r.readFile(pid, "/statm")
		if err != nil {
			return Usage{}, err
		}
		resident, shared, err := ParseStatm(b)
		if err != nil {
			return Usage{}, err
		}
		u.MemoryBytes = max(resident-shared, 0) * r.page
	}
	return u, nil
}

// readFile reads root/pid/name into the reused buffer, with no allocation.
func (r *ProcReader) readFile(pid int32, name string) ([]byte, error) {
	r.path = append(r.path[:0], r.root...)
	r.path = append(r.path, '/')
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	r.path = append(r.path, name...)
	r.path = append(r.path, 0)
	fd, err := openat(r.path)
	if err != nil {
		return nil, gone(string(r.path[:len(r.path)-1]), "open", err)
	}
	n, err := unix.Read(fd, r.buf)
	unix.Close(fd)
	if err != nil {
		return nil, gone(string(r.path[:len(r.path)-1]), "read", err)
	}
	return r.buf[:n], nil
}

// gone maps a vanished process (ENOENT, ESRCH) to tracker.ErrGone.
func gone(path, op string, err error) error {
	e := &fs.PathError{Op: op, Path: path, Err: err}
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: %w", tracker.ErrGone, e)
	}
	return e
}
