package tracker

import (
	"fmt"

	"go.uber.org/zap"
)

// Kills now. A policy (a resource limit, the pressure policy: KillSession)
// or an operator (KillNow) orders processes killed now. The order goes
// through the deadline queue, so the normal kill protocol runs: each root
// is queued due now with the order's reason, requester and figures, or, if
// it is queued already, its deadline is moved to now. The same order is
// given again, to what lies below, when a root exits before it fires
// (Table.removeLocked), and after a kill that failed (retry.go).
//
// While one of its processes is queued or being reaped for such an order,
// a session is being killed (Session.pending, Proc.killFor): neither a
// limit nor the pressure policy queues it again.

// kill is one order to kill processes now: why, who asked, with what
// figures.
type kill struct {
	why Reason
	by  string
	fig Figures
}

// killer queues kill orders: processes to be killed now and again after a
// failed kill (retry.go). An order is an Agent in the deadline queue, held
// by its process's entry, counted toward its session's kill (pend) until
// it leaves the queue unfired or the reaper releases it. It is guarded by
// the table's lock: every method runs with it held (…Locked).
type killer struct {
	queue  *Deadlines
	clock  Clock
	pin    Pinner     // nil: orders get FD -1
	proc   ProcReader // command lines and cgroups, read under the lock
	errs   readErrs
	judge  spareJudge
	log    *zap.Logger
	dryRun bool
}

// spareJudge says what a kill leaves alone (keeper), under the table's
// lock.
type spareJudge interface {
	// sparedLocked: a kill for why leaves q, with its descendants, alone.
	sparedLocked(q *Proc, s *Session, why Reason, reads *int) bool
	// exemptLocked: no policy kills s (its agent is root-kept).
	exemptLocked(s *Session, reads *int) bool
}

// sessionLocked queues the whole session s to be killed now for k
// (KillSession): refused if it is being killed already (ErrKilling) or
// exempt (ErrExempt).
func (kr *killer) sessionLocked(s *Session, k kill) (LeaseResult, error) {
	res := LeaseResult{PID: s.ID.PID, Start: s.ID.Start, Comm: s.Comm, Session: s.ID}
	if s.pending > 0 {
		return res, fmt.Errorf("session %d (%s), %s: %w", s.ID.PID, s.Comm, s.killing, ErrKilling)
	}
	if kr.judge.exemptLocked(s, nil) {
		return res, fmt.Errorf("session %d (%s): %w", s.ID.PID, s.Comm, ErrExempt)
	}
	kr.rootsLocked(sessionRootsLocked(s), s.Rule, k, nil, &res)
	switch {
	case len(res.Queued) > 0:
	case len(res.Busy) > 0:
		return res, fmt.Errorf("session %d (%s): %w", s.ID.PID, s.Comm, ErrKilling)
	default:
		return res, fmt.Errorf("session %d (%s): nothing left to kill", s.ID.PID, s.Comm)
	}
	return res, nil
}

// rootsLocked queues each root to be killed now with k, or retargets its
// queued deadline to now. Roots that allow refuses are skipped, and so,
// for every reason but manual (an order), are root-kept ones.
func (kr *killer) rootsLocked(roots []*Proc, rule string, k kill, allow func(pid int32, kthread bool) bool, res *LeaseResult) {
	now := kr.clock.Now()
	reads := 0 // marksPerProc per root judged
	for _, q := range roots {
		if allow != nil && !allow(q.PID, q.Kthread) {
			continue
		}
		reads += marksPerProc
		if q.session != nil && kr.judge.sparedLocked(q, q.session, k.why, &reads) {
			continue
		}
		if a := q.agent; a != nil {
			if kr.queue.retargetNow(a, now, k) {
				res.Queued = append(res.Queued, q.PID)
				pendKill(q, k.why)
			} else {
				res.Busy = append(res.Busy, q.PID)
				if q.holds > 0 {
					pendKill(q, k.why) // fired, being reaped: Release ends it
				}
			}
			continue
		}
		fillCmdline(kr.proc, nil, q)
		fd := -1
		if kr.pin != nil {
			var err error
			if fd, err = kr.pin(q.PID, q.Start); err != nil {
				continue // gone (its exit follows) or reused
			}
		}
		a := &Agent{PID: q.PID, Start: q.Start, Comm: q.Comm, Cmdline: q.Cmdline, Rule: rule, FD: fd,
			Reason: k.why, Session: res.Session, Deadline: now, RequestedBy: k.by, Figures: k.fig, proc: q,
			Cgroup: cgroupOf(kr.proc, kr.errs, q)}
		q.agent = a
		q.holds++
		kr.queue.Add(a)
		res.Queued = append(res.Queued, q.PID)
		pendKill(q, k.why)
	}
}

// sessionRootsLocked returns what kills the whole session: its agent, if it
// lives, and every live member whose nearest live ancestor is not a member
// (each one's tree kill takes the rest).
func sessionRootsLocked(s *Session) []*Proc {
	var roots []*Proc
	if s.agent != nil {
		roots = append(roots, s.agent)
	}
	for q := s.head; q != nil; q = q.snext {
		if q != s.agent && !q.dead && isRoot(q, s) {
			roots = append(roots, q)
		}
	}
	return roots
}

// pend counts p's kill toward s (Session.pending) until unpend: the
// session is being killed meanwhile, so neither a limit nor the pressure
// policy queues it again. Under the table's lock.
func pend(p *Proc, s *Session) {
	if p.killFor == nil && s != nil {
		p.killFor = s
		s.pending++
	}
}

// unpend ends p's count toward its session's kill: its agent left the
// queue unfired (exit, keep) or the reaper released it. A session none of
// whose kills is pending any more is judged again at the next sample.
// Under the table's lock.
func unpend(p *Proc) {
	if s := p.killFor; s != nil {
		s.pending--
		p.killFor = nil
	}
}

// pendKill counts q, just queued (or found being reaped) for a kill for
// why, toward its session's kill. Under the table's lock.
func pendKill(q *Proc, why Reason) {
	if s := q.session; s != nil {
		pend(q, s)
		s.killing = why
	}
}
