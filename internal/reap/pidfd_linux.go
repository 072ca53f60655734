//go:build linux

package reap

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// StatReader reads one process's /proc/PID/stat.
type StatReader interface {
	Stat(pid int32) (tracker.ProcInfo, error)
}

// ErrReused means the PID now belongs to another process than the one the
// tracker recorded.
var ErrReused = errors.New("pid reused by another process")

// Pins opens pidfds for agents and their descendants within a descriptor
// budget, and counts what went wrong.
//
// A pidfd per queued agent for its whole life (hours) would let a few
// thousand agents exhaust RLIMIT_NOFILE, after which nothing opens: no
// /proc read, no pidfd for a due agent. So an agent is pinned when it is
// found only while the daemon holds few descriptors (below matchCap);
// otherwise its start time is checked then and it is queued without one,
// and the reaper pins it when it is due, checking the start time again.
// The budget test is the number pidfd_open returns: the kernel hands out
// the lowest free descriptor (open(2)), so a number at or above the cap
// means every one below it is in use, for the price of the open itself.
type Pins struct {
	procs    StatReader
	log      *zap.Logger
	matchCap int // at match: half the soft RLIMIT_NOFILE, at most 65536
	fireCap  int // for a due agent or its tree: all but a reserve

	deferred atomic.Uint64
	failures atomic.Uint64

	logMu   sync.Mutex
	logged  time.Time
	quieted uint64
}

// PinStats are the cumulative counts of Pins.
type PinStats struct {
	// Deferred counts agents queued without a pidfd (over the budget, or
	// a failed open): they are pinned when due.
	Deferred uint64
	// Failures counts pidfd_open or /proc reads that failed for another
	// reason than a vanished process (EMFILE, ENFILE, ENOMEM, ...); each
	// is retried.
	Failures uint64
}

// errBudget: the daemon holds too many descriptors to pin now.
var errBudget = errors.New("descriptor budget reached")

// NewPins sizes the budget from RLIMIT_NOFILE's soft limit, which the Go
// runtime has raised to the hard limit at start.
func NewPins(procs StatReader, log *zap.Logger) *Pins {
	if log == nil {
		log = zap.NewNop()
	}
	limit := 1024
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur > 0 && rl.Cur < 1<<30 {
		limit = int(rl.Cur)
	}
	reserve := max(64, limit/8)
	return &Pins{procs: procs, log: log, matchCap: min(limit/2, 1<<16), fireCap: max(limit-reserve, limit/2)}
}

// Stats returns the counts so far.
func (p *Pins) Stats() PinStats {
	return PinStats{Deferred: p.deferred.Load(), Failures: p.failures.Load()}
}

// Pinner returns the tracker.Pinner for agents being found: a pidfd
// checked against the start time, or -1 and a nil error when the agent is
// to be pinned when due (its start time checked now if /proc answers), or
// an error satisfying errors.Is(err, tracker.ErrGone).
func (p *Pins) Pinner() tracker.Pinner {
	return func(pid int32, start tracker.Start) (int, error) {
		fd, err := p.pin(pid, start, p.matchCap)
		if err == nil || errors.Is(err, tracker.ErrGone) {
			return fd, err
		}
		if info, serr := p.procs.Stat(pid); serr == nil && !info.Start.Same(start) {
			return -1, fmt.Errorf("pid %d: %w: %w", pid, ErrReused, tracker.ErrGone)
		} else if errors.Is(serr, tracker.ErrGone) {
			return -1, serr
		}
		p.deferred.Add(1)
		return -1, nil
	}
}

// Pinner returns a tracker.Pinner with a budget of its own (see Pins).
func Pinner(procs StatReader) tracker.Pinner { return NewPins(procs, nil).Pinner() }

// pin opens a pidfd for pid and checks that the process holding it started
// at start. Opening first and checking second is what makes it safe: if
// the check passes, the pidfd refers to the process that was checked (or to
// one that has exited since, which signals cannot reach). A descriptor at
// or above limit is given back with errBudget. Errors other than ErrGone
// are worth retrying; they are counted and logged (once per burst).
func (p *Pins) pin(pid int32, start tracker.Start, limit int) (int, error) {
	fd, err := unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, fmt.Errorf("pidfd_open %d: %w", pid, tracker.ErrGone)
		}
		return -1, p.failed(fmt.Errorf("pidfd_open %d: %w", pid, err))
	}
	if fd >= limit {
		unix.Close(fd)
		return -1, errBudget
	}
	info, err := p.procs.Stat(pid)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, tracker.ErrGone) {
			return -1, err
		}
		return -1, p.failed(fmt.Errorf("read /proc/%d/stat: %w", pid, err))
	}
	if !info.Start.Same(start) {
		unix.Close(fd)
		return -1, fmt.Errorf("pid %d: %w: %w", pid, ErrReused, tracker.ErrGone)
	}
	return fd, nil
}

// failed counts err and logs it, at most every 10 s with the number of
// failures not logged in between: EMFILE comes in bursts of thousands.
func (p *Pins) failed(err error) error {
	p.failures.Add(1)
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if now := time.Now(); now.Sub(p.logged) >= 10*time.Second {
		p.log.Warn("cannot pin a process; retrying", zap.Error(err), zap.Uint64("failures_not_logged", p.quieted),
			zap.Uint64("failures_total", p.failures.Load()))
		p.logged, p.quieted = now, 0
	} else {
		p.quieted++
	}
	return err
}

// signal sends sig through a pidfd. A process that has exited (even if not
// yet reaped by its parent) gives ESRCH, mapped to tracker.ErrGone; a
// process the daemon may not signal gives EPERM (pidfd_send_signal(2)).
func signal(fd int, sig unix.Signal) error {
	err := unix.PidfdSendSignal(fd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return tracker.ErrGone
	}
	return err
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
