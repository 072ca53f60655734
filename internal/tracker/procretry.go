package tracker

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Failed /proc reads. The table reads /proc at a process's exec (its stat)
// and when it may be an agent (its command line, its cgroup for a cgroup
// scope, a pidfd). A read that fails because the process exited needs
// nothing: its exit event follows. Any other failure (EMFILE when the
// daemon's descriptors run out, ENOMEM, EINTR through a FUSE /proc, ...)
// would leave an agent unmatched for its whole life if it were dropped, so
// the read is retried, with backoff, for as long as the process lives, and
// warned of (rate-limited) and counted in Counters.ProcErrs. At most
// maxRetries processes wait at once; a failed read past that is counted
// in the warning (retries_dropped) instead, and the process is judged
// again at its next exec or rename.
//
// The retries run from a timer, under the table's lock, like every other
// read the table makes outside the applying goroutine (a reload's SetRules,
// a control command). A retry redoes what the event would have done, with
// what /proc shows then: an exec is applied from a fresh stat, a match is
// made on the current name and command line.

// retryKind says what a retry redoes.
type retryKind uint8

const (
	retryMatch retryKind = 1 << iota // matchLocked: command line, cgroup or pin failed
	retryExec                        // the exec: its stat failed
)

const (
	retryFirst = 20 * time.Millisecond // first retry after a failure
	retryMax   = 5 * time.Second       // backoff cap
	// maxRetries bounds the pending retries: far more live processes than
	// a failing /proc would leave unmatched at once, a few hundred KiB.
	maxRetries = 4096
	// readWarnEvery rate-limits the warning of failed reads.
	readWarnEvery = int64(10 * time.Second)
)

// procRetry is one process whose read is to be retried.
type procRetry struct {
	pid int32
	// start is the process's identity when the read failed; zero for an
	// exec of a process the table did not hold (its fork was lost).
	start Start
	kind  retryKind
	tries int
	due   int64 // boottime
}

// procRetries is the table's queue of /proc reads to retry and the
// limiter of their warnings. It is guarded by the table's lock (mu): its
// methods run with it held (…Locked), but run, the timer's, which takes
// it.
type procRetries struct {
	mu    *sync.Mutex // the table's
	clock Clock
	log   *zap.Logger
	redo  readRedoer
	errs  readErrs

	pending map[int32]*procRetry
	timer   interface{ Stop() bool }
	armed   int64 // due time the timer is set for; 0: none
	// afterFunc starts the timer (time.AfterFunc); tests replace it to run
	// retries themselves.
	afterFunc func(time.Duration, func()) interface{ Stop() bool }

	closed bool // Close: no timer is armed again

	warned   bool
	warnedAt int64 // boottime of the last warning
	failed   int   // reads failed since the last warning
	dropped  int   // retries refused since the last warning (queue full)
}

// readRedoer redoes, under the table's lock, what a failed read of the
// process pid (identity start) left undone: its exec, or its match.
type readRedoer interface {
	redoExecLocked(pid int32, start Start)
	redoMatchLocked(pid int32, start Start)
}

// readErrs is told, under the table's lock, of a /proc read that failed
// (Table.procErr: counted, and warned of unless the process is gone).
type readErrs interface {
	procErr(pid int32, err error)
}

// backoff is the delay before retry number tries+1.
func backoff(tries int) int64 {
	d := retryFirst
	for i := 0; i < tries && d < retryMax; i++ {
		d *= 2
	}
	return int64(min(d, retryMax))
}

// failLocked handles a failed read of pid (identity start) for kind:
// nothing if the process is gone, else counted, warned and retried.
func (r *procRetries) failLocked(pid int32, start Start, kind retryKind, err error) {
	if errors.Is(err, ErrGone) {
		return
	}
	r.addLocked(pid, start, kind)
	r.errs.procErr(pid, err)
}

// addLocked queues a retry of kind for pid (identity start). Call procErr
// after it: the warning reports a retry refused because the queue is
// full.
func (r *procRetries) addLocked(pid int32, start Start, kind retryKind) {
	now := r.clock.Now()
	if q := r.pending[pid]; q != nil {
		if q.start.NS == 0 || start.NS == 0 || q.start.Same(start) {
			// The same process: one retry does both, on its own backoff.
			q.kind |= kind
			if start.NS != 0 {
				q.start = start
			}
			return
		}
		delete(r.pending, pid) // an earlier holder of the PID: it is gone
	}
	if len(r.pending) >= maxRetries {
		r.dropped++ // reported by the warning that follows (procErr)
		return
	}
	if r.pending == nil {
		r.pending = map[int32]*procRetry{}
	}
	r.pending[pid] = &procRetry{pid: pid, start: start, kind: kind, due: now + backoff(0)}
	r.armLocked(now)
}

// warnLocked warns of a failed read: at once for the first, then at most
// every readWarnEvery, with the count since the last warning.
func (r *procRetries) warnLocked(pid int32, err error) {
	r.failed++
	now := r.clock.Now()
	if r.warned && now-r.warnedAt < readWarnEvery {
		return
	}
	r.log.Warn("reading /proc failed, and not because the process exited", zap.Int32("pid", pid), zap.Error(err),
		zap.Int("failures_since_last_warning", r.failed), zap.Int("retries_pending", len(r.pending)),
		zap.Int("retries_dropped", r.dropped))
	r.warned, r.warnedAt, r.failed, r.dropped = true, now, 0, 0
}

// armLocked sets the timer for the earliest pending retry.
func (r *procRetries) armLocked(now int64) {
	var next int64
	for _, q := range r.pending {
		if next == 0 || q.due < next {
			next = q.due
		}
	}
	if next == r.armed || r.closed {
		return
	}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.armed = next
	if next == 0 {
		return
	}
	after := r.afterFunc
	if after == nil {
		after = func(d time.Duration, f func()) interface{ Stop() bool } { return time.AfterFunc(d, f) }
	}
	r.timer = after(time.Duration(max(next-now, 0)), r.run)
}

// run runs the retries that are due, under the table's lock.
func (r *procRetries) run() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return // fired as Close stopped it
	}
	r.timer, r.armed = nil, 0
	now := r.clock.Now()
	var due []*procRetry
	for _, q := range r.pending {
		if q.due <= now {
			due = append(due, q)
		}
	}
	for _, q := range due {
		kind := q.kind
		q.kind = 0 // a read failing again sets it back (addLocked)
		if kind&retryExec != 0 {
			r.redo.redoExecLocked(q.pid, q.start)
		} else {
			r.redo.redoMatchLocked(q.pid, q.start)
		}
		switch {
		case r.pending[q.pid] != q:
			// Replaced by a newer holder of the PID.
		case q.kind == 0:
			delete(r.pending, q.pid)
		default:
			q.tries++
			q.due = now + backoff(q.tries)
		}
	}
	r.armLocked(now)
}

// lenLocked is the number of processes whose read waits to be retried.
func (r *procRetries) lenLocked() int { return len(r.pending) }

// closeLocked stops the timer: no retry runs from then on, and none is
// armed again.
func (r *procRetries) closeLocked() {
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.armed = 0
}
