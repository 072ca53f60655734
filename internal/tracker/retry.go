package tracker

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Retrying failed kills. A kill fails when a process of its tree could not
// be signalled (EPERM), could not be pinned within the reaper's bound
// (EMFILE, ENOMEM), or outlived the SIGKILL rounds. None of that is final:
// every process of the tree still alive is queued again (Retry), with the
// kill's reason, session, requester and figures, and killed again with its
// own tree after RetryDelay — 1 s after the first failure, doubling up to
// a minute — for as long as it lives. The retry leaves the queue with the
// process (its exit event, or a PID that a newer process holds); nothing
// the process does to itself (a rename, an exec) takes it off. Only an
// operator moves it: a kill (KillNow) makes it a new kill, due now; a keep
// takes it back.
//
// A retry is an Agent with Attempt > 0 (the failed kills before it) and
// FirstDeadline the first kill's deadline, which every attempt's record
// keeps: lateness counts from when the process was due, not from when a
// retry was.

// Retry backoff bounds.
const (
	RetryFirst = time.Second // after the first failed kill
	RetryMax   = time.Minute // the longest wait between two attempts
)

// RetryDelay is how long after its n-th failed kill (n >= 1) a process is
// tried again: 1 s, 2 s, 4 s, ... at most RetryMax.
func RetryDelay(n int) time.Duration {
	d := RetryFirst
	for i := 1; i < n && d < RetryMax; i++ {
		d *= 2
	}
	return min(d, RetryMax)
}

// retryLocked queues again, after the kill of a failed, the processes of
// its tree still alive (alive, as the reaper last saw them; a's own process
// among them if it survived; procs, the table's entries): each one whose
// ancestors in the table are not queued too (their tree kill takes it)
// becomes a kill root, due RetryDelay(a.Attempt+1) from now (or when it was
// queued for already, if that comes first). A process that has exited, or
// whose PID a newer process holds, is not queued (Table.Retry). It returns
// the PIDs queued and when they are due.
func (kr *killer) retryLocked(procs map[int32]*Proc, a *Agent, alive []Target) ([]int32, int64) {
	n := a.Attempt + 1
	at := kr.clock.Now() + int64(RetryDelay(n))
	if kr.dryRun {
		return nil, 0 // nothing was signalled: nothing failed
	}
	first := a.FirstDeadline
	if first == 0 {
		first = a.Deadline
	}
	type cand struct {
		q     *Proc
		depth int
	}
	var cs []cand
	seen := make(map[*Proc]bool, len(alive))
	for _, tg := range alive {
		q := procs[tg.PID]
		if q == nil || q.dead || !q.Start.Same(tg.Start) || seen[q] {
			continue
		}
		seen[q] = true
		d := 0
		for p := q.parent; p != nil; p = p.parent {
			d++
		}
		cs = append(cs, cand{q, d})
	}
	// Parents first, so that a process below one already queued is left
	// to that one's tree kill, and one below a process that could not be
	// queued (it just exited) is queued itself.
	slices.SortStableFunc(cs, func(x, y cand) int { return x.depth - y.depth })
	handled := make(map[*Proc]bool, len(cs))
	var queued []int32
	for _, c := range cs {
		if coveredBy(c.q, handled) {
			continue
		}
		if ok, mine := kr.retryOneLocked(c.q, a, n, first, at); ok {
			handled[c.q] = true
			if mine {
				queued = append(queued, c.q.PID)
			}
		}
	}
	return queued, at
}

// coveredBy: a process above q in the table is in set.
func coveredBy(q *Proc, set map[*Proc]bool) bool {
	for p := q.parent; p != nil; p = p.parent {
		if set[p] {
			return true
		}
	}
	return false
}

// retryOneLocked queues q to be killed at at as the n-th retry of the failed
// kill a (first: its first deadline). ok: q's kill is queued or in flight;
// mine: queued here. A process queued for something else (a nested agent's
// max age, a leftover) becomes the retry, due at the earlier of the two
// times: left as it was, a nested agent's entry could leave the queue by
// its own rename or a reload, which a retry never does. One already in
// another kill's hands is left to it (that kill retries what it leaves).
func (kr *killer) retryOneLocked(q *Proc, a *Agent, n int, first, at int64) (ok, mine bool) {
	if cur := q.agent; cur != nil && cur != a {
		if kr.queue.toRetry(cur, a, n, first, at) {
			pendKill(q, a.Reason) // the session is being killed until the retry is over
			return true, true
		}
		return true, false
	}
	fd := -1
	if kr.pin != nil {
		var err error
		if fd, err = kr.pin(q.PID, q.Start); err != nil {
			if errors.Is(err, ErrGone) {
				return false, false // gone (its exit follows) or reused: nothing of ours to kill
			}
			// EMFILE, ENOMEM: queued without a pidfd all the same; the
			// reaper pins it when it is due, checking its start time then.
			fd = -1
			kr.errs.procErr(q.PID, fmt.Errorf("pin kill retry %d (%s): %w", q.PID, q.Comm, err))
		}
	}
	fillCmdline(kr.proc, kr.errs, q)
	cg := a.Cgroup
	if q != a.proc {
		cg = cgroupOf(kr.proc, kr.errs, q)
	}
	// a's own process: a's hold stays until the reaper's Release, the
	// retry takes one of its own.
	r := &Agent{PID: q.PID, Start: q.Start, Comm: q.Comm, Cmdline: q.Cmdline, Rule: a.Rule, FD: fd, proc: q,
		Reason: a.Reason, Session: a.Session, RequestedBy: a.RequestedBy, Figures: a.Figures, Cgroup: cg,
		Deadline: at, Attempt: n, FirstDeadline: first}
	q.agent = r
	q.holds++
	kr.queue.Add(r)
	pendKill(q, a.Reason)
	kr.log.Debug("kill retry queued", zap.Int32("pid", q.PID), zap.String("comm", q.Comm),
		zap.String("reason", string(a.Reason)), zap.Int("attempt", n), zap.Int64("deadline_boot_ns", at))
	return true, true
}

// retryBelowLocked queues, in place of the retry a of p, which exited
// before it fired, the nearest live processes below p — what a's tree kill
// would have taken — at a's time, as the same attempt. Kept ones stay
// alone, as in Descendants, unless a is a manual kill.
func (kr *killer) retryBelowLocked(p *Proc, a *Agent) {
	at := max(a.Deadline, kr.clock.Now())
	reads := 0 // marksPerProc per process judged
	var walk func(n *Proc)
	walk = func(n *Proc) {
		for c := n.child; c != nil; c = c.next {
			if !c.dead {
				reads += marksPerProc
			}
			switch {
			case c.dead:
				walk(c)
			case kr.judge.sparedLocked(c, c.session, a.Reason, &reads):
			default:
				kr.retryOneLocked(c, a, a.Attempt, a.FirstDeadline, at)
			}
		}
	}
	walk(p)
}
