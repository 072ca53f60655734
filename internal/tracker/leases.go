package tracker

import (
	"fmt"
	"time"
)

// An operator's word on one process, given through the control socket:
// more time (a lease), a deadline set outright, an exemption (keep) or its
// withdrawal (unkeep), or a kill now. Leases and keeps are keyed by PID and
// start time, like every identity in the table, and end with the process.
// The daemon persists them (LeaseState, LoadLeases) so that they survive
// SIGHUP, which never touches them, and a restart.

// Keep overrides of a Lease.
const (
	LeaseKeep   = "keep"   // root-kept, with its descendants, as by a --keep rule
	LeaseUnkeep = "unkeep" // a candidate again, whatever its environment or a keep rule says
)

// maxExtra bounds the sum of a process's extends: far beyond any real
// lease, far below the int64 nanoseconds where a deadline would wrap.
const maxExtra = 10 * 365 * 24 * time.Hour

// Lease is what an operator said about one process.
type Lease struct {
	PID   int32 `json:"pid"`
	Start Start `json:"start"`
	// Extra is the sum of the extends: the deadline is start + max age +
	// Extra, whatever max age a reload sets.
	Extra time.Duration `json:"extra,omitempty"`
	// Until is a deadline set outright (boottime ns); 0: none. Extends
	// after it move it on.
	Until int64 `json:"until,omitempty"`
	// Keep is LeaseKeep, LeaseUnkeep or "".
	Keep string `json:"keep,omitempty"`
}

func (l *Lease) empty() bool { return l.Extra == 0 && l.Until == 0 && l.Keep == "" }

// LeaseResult says what a control operation did.
type LeaseResult struct {
	PID     int32
	Comm    string
	Start   Start
	Session SessionID // the session of the process (zero if none)
	// Deadline is the new deadline (Extend, ExtendUntil), boottime ns.
	Deadline int64
	// Extra is the sum of the extends in force (Extend).
	Extra time.Duration
	// Queued: processes queued to be killed (Unkeep: as agents or
	// leftovers again; KillNow: the session's roots, now). Dequeued:
	// queued kills taken back (Keep). Busy: already being killed, too late
	// to change.
	Queued, Dequeued, Busy []int32
}

// findLocked returns the live entry for pid; a non-zero start must match.
func (t *Table) findLocked(pid int32, start Start) (*Proc, error) {
	p := t.procs[pid]
	if p == nil || p.dead || (start.NS != 0 && !p.Start.Same(start)) {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	return p, nil
}

// leaseLocked returns p's lease (created when create is set), or nil.
func (t *Table) leaseLocked(p *Proc, create bool) *Lease {
	l := t.leases[p.PID]
	if l != nil && !l.Start.Same(p.Start) {
		delete(t.leases, p.PID) // an earlier holder of the PID: ended with it
		l = nil
	}
	if l == nil && create {
		if t.leases == nil {
			t.leases = map[int32]*Lease{}
		}
		l = &Lease{PID: p.PID, Start: p.Start}
		t.leases[p.PID] = l
	}
	return l
}

// endLeaseLocked forgets the lease of p, which exited.
func (t *Table) endLeaseLocked(p *Proc) {
	if l := t.leases[p.PID]; l != nil && l.Start.Same(p.Start) {
		delete(t.leases, p.PID)
		t.leaseGen++
	}
}

// leaseAgentLocked gives a, about to be queued for its max age, the
// lease of its process.
func (t *Table) leaseAgentLocked(a *Agent) {
	if l := t.leaseLocked(a.proc, false); l != nil {
		a.extra, a.until = int64(l.Extra), l.Until
	}
}

// keepOverrideLocked is q's keep override: keepYes, keepNo or keepUnknown
// (none).
func (t *Table) keepOverrideLocked(q *Proc) int8 {
	if len(t.leases) == 0 {
		return keepUnknown
	}
	switch l := t.leaseLocked(q, false); {
	case l == nil:
	case l.Keep == LeaseKeep:
		return keepYes
	case l.Keep == LeaseUnkeep:
		return keepNo
	}
	return keepUnknown
}

// Extend adds d to the allowance of the agent pid: its deadline becomes
// start + max age + the sum of its extends (or, after ExtendUntil, that
// deadline + d). A zero start matches any holder of pid.
func (t *Table) Extend(pid int32, start Start, d time.Duration) (LeaseResult, error) {
	if d <= 0 {
		return LeaseResult{}, fmt.Errorf("extend by %s: must be positive", d)
	}
	return t.lease(pid, start, func(l Lease) (Lease, error) {
		if l.Until != 0 {
			l.Until += int64(d)
		} else {
			l.Extra += d
		}
		if l.Extra > maxExtra {
			return l, fmt.Errorf("extends would add up to %s, more than %s", l.Extra, maxExtra)
		}
		return l, nil
	})
}

// ExtendUntil sets the deadline of the agent pid to until (boottime ns).
func (t *Table) ExtendUntil(pid int32, start Start, until int64) (LeaseResult, error) {
	if now := t.cfg.Clock.Now(); until <= now {
		return LeaseResult{}, fmt.Errorf("deadline %s ago is not in the future (to kill now, use kill)", time.Duration(now-until))
	}
	return t.lease(pid, start, func(l Lease) (Lease, error) {
		l.Until = until
		return l, nil
	})
}

// lease changes the lease of the agent pid with fn and moves its queued
// deadline.
func (t *Table) lease(pid int32, start Start, fn func(Lease) (Lease, error)) (LeaseResult, error) {
	return t.command(pid, start, func(p *Proc, res *LeaseResult) error {
		a := p.agent
		if a == nil || a.Reason != ReasonMaxAge || a.Attempt > 0 {
			what := "not an agent waiting for its max age"
			switch {
			case a != nil && a.Attempt > 0:
				what = "being killed: its kill failed and is retried (kill it now, or keep it)"
			case a != nil && a.Reason == ReasonLeftover:
				what = "a leftover waiting for its kill (keep it instead)"
			case a != nil:
				what = "queued to be killed (" + string(a.Reason) + ")"
			case rootMemo(p, t.keepOverrideLocked(p)) == keepYes:
				what = "kept: no deadline to extend"
			}
			return fmt.Errorf("pid %d (%s) is %s", p.PID, p.Comm, what)
		}
		old := t.leaseLocked(p, false)
		var cur Lease
		if old != nil {
			cur = *old
		}
		cur.PID, cur.Start = p.PID, p.Start
		next, err := fn(cur)
		if err != nil {
			return err
		}
		previous, deadline, ok := t.cfg.Queue.setLease(a, int64(next.Extra), next.Until, t.deadline)
		if !ok {
			res.Busy = []int32{p.PID}
			return fmt.Errorf("pid %d (%s) is already being killed", p.PID, p.Comm)
		}
		*t.leaseLocked(p, true) = next
		t.leaseGen++
		t.notes.deadlineMovedLocked(a, previous, deadline, "extend")
		res.Deadline, res.Extra = deadline, next.Extra
		return nil
	})
}

// command runs fn on the live process pid (a non-zero start must match)
// with the table locked; fn adds what it did to the result made for p.
func (t *Table) command(pid int32, start Start, fn func(p *Proc, res *LeaseResult) error) (LeaseResult, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.findLocked(pid, start)
	if err != nil {
		return LeaseResult{}, err
	}
	res := leaseResult(p)
	err = fn(p, &res)
	return res, err
}

// leaseResult is what every lease command answers about p.
func leaseResult(p *Proc) LeaseResult {
	res := LeaseResult{PID: p.PID, Comm: p.Comm, Start: p.Start}
	if p.session != nil {
		res.Session = p.session.ID
	}
	return res
}

// eachBelow calls f for p and every process below it in the table, dead
// (held) entries included, parents first.
func eachBelow(p *Proc, f func(*Proc)) {
	f(p)
	for c := p.child; c != nil; c = c.next {
		eachBelow(c, f)
	}
}

// Keep exempts pid and its descendants from every policy but a manual
// kill, as a --keep rule does (root-kept, sessions.go): a queued max-age
// deadline or leftover kill of any of them is taken back.
func (t *Table) Keep(pid int32, start Start) (LeaseResult, error) {
	return t.command(pid, start, func(p *Proc, res *LeaseResult) error {
		t.setKeepLocked(p, LeaseKeep)
		eachBelow(p, func(q *Proc) {
			if q.dead {
				return
			}
			if q != p {
				q.marks.root = keepYes // p's own keep is its lease
			}
			if a := q.agent; a != nil {
				if t.cfg.Queue.Remove(a) {
					q.agent = nil
					closeFD(a.FD)
					q.holds--
					t.unpendLocked(q)
					res.Dequeued = append(res.Dequeued, q.PID)
				} else {
					res.Busy = append(res.Busy, q.PID)
				}
			}
		})
		return nil
	})
}

// setKeepLocked records root's keep (LeaseKeep) or unkeep (LeaseUnkeep)
// of p in its lease.
func (t *Table) setKeepLocked(p *Proc, keep string) {
	t.leaseLocked(p, true).Keep = keep
	t.leaseGen++
	t.sessGen++ // the keep marks are persisted with the sessions
}

// Unkeep withdraws a keep: pid is a candidate again, whatever its
// environment or a keep rule says (a descendant stays kept if its own
// environment or a keep of its own says so). It is matched again, and if
// its session's agent has exited, queued as a leftover at the agent's exit
// + the leftover grace, or now if that is past.
func (t *Table) Unkeep(pid int32, start Start) (LeaseResult, error) {
	return t.command(pid, start, func(p *Proc, res *LeaseResult) error {
		t.setKeepLocked(p, LeaseUnkeep)
		// Forget the root keep the processes below p took from their
		// ancestors: it may have come from p's keep. A REAPER_KEEP=1 they
		// inherited came from an environment, not from a keep, and stays.
		eachBelow(p, func(q *Proc) { q.marks.root = keepUnknown })
		now := t.cfg.Clock.Now()
		reads := 0 // marksPerProc per process judged
		eachBelow(p, func(q *Proc) {
			if !q.dead {
				reads += marksPerProc
				t.candidateLocked(q, now, res, &reads)
			}
		})
		return nil
	})
}

// candidateLocked queues q, no longer kept, as an agent or a leftover as
// the policies say.
// reads as for rootKeptLocked.
func (t *Table) candidateLocked(q *Proc, now int64, res *LeaseResult, reads *int) {
	s := q.session
	if s != nil && t.rootKeptLocked(q, s, reads) == keepYes {
		return
	}
	had := q.agent
	t.matchLocked(q, false)
	if s == nil || s.agent != nil || s.ExitedAt == 0 || !t.leftovers {
		if q.agent != nil && q.agent != had {
			res.Queued = append(res.Queued, q.PID)
		}
		return
	}
	// Its agent has exited: a leftover, unless a live ancestor in the
	// session (not kept) takes it along in its own tree kill.
	a := q.parent
	for a != nil && a.dead {
		a = a.parent
	}
	if a != nil && a.session == s && !t.sparedLocked(a, s, ReasonLeftover, reads) {
		return
	}
	if t.sparedLocked(q, s, ReasonLeftover, reads) {
		return // its own environment (or a process above it) says REAPER_KEEP=1
	}
	deadline := max(s.ExitedAt+int64(t.leftoverGrace), now)
	t.queueLeftoverAtLocked(q, s, deadline)
	if q.agent != nil && q.agent != had {
		res.Queued = append(res.Queued, q.PID)
	}
}

// KillNow queues pid's session to be killed now (reason manual) through the
// deadline queue, so the normal kill protocol runs: the agent, if it
// lives, and every member whose nearest live ancestor is not a member
// (each with its own tree). A process in no session is killed alone if an
// agent rule matches it, or if force is set; else ErrNotAgent. allow
// (reap.Guard's rule) is asked for every process before it is queued. by
// names who asked (the kill record's requested_by).
func (t *Table) KillNow(pid int32, start Start, force bool, by string, allow func(pid int32, kthread bool) bool) (LeaseResult, error) {
	return t.command(pid, start, func(p *Proc, res *LeaseResult) error {
		if allow != nil && !allow(p.PID, p.Kthread) {
			return fmt.Errorf("pid %d (%s) is protected: never PID 1, the daemon, its ancestors or a kernel thread", p.PID, p.Comm)
		}
		var roots []*Proc
		var rule string
		if s := p.session; s != nil {
			res.Session, rule = s.ID, s.Rule
			roots = sessionRootsLocked(s)
		} else {
			r, ok := t.ruleLocked(p, false)
			if (!ok || !t.underLocked(p, t.cgroupLocked(p))) && !force {
				return fmt.Errorf("pid %d (%s) is %w: refused without --force", p.PID, p.Comm, ErrNotAgent)
			}
			rule = r
			roots = append(roots, p)
		}
		t.killRootsLocked(roots, rule, kill{why: ReasonManual, by: by}, allow, res)
		if len(res.Queued) == 0 && len(res.Busy) == 0 {
			return fmt.Errorf("pid %d (%s): nothing left to kill", p.PID, p.Comm)
		}
		return nil
	})
}

// LeaseGen changes whenever a lease changes or ends, so a caller can
// persist LeaseState only when there is something new.
func (t *Table) LeaseGen() uint64 { return t.gen(&t.leaseGen) }

// LeaseState returns every lease of a live process, for persisting.
func (t *Table) LeaseState() []Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Lease, 0, len(t.leases))
	for pid, l := range t.leases {
		if p := t.procs[pid]; p != nil && !p.dead && p.Start.Same(l.Start) && !l.empty() {
			out = append(out, *l)
		}
	}
	return out
}

// LoadLeases gives back the leases a previous run persisted. Call it
// before the start-up scan is merged, so that an agent is queued with its
// lease from the start (never at its bare max age, which may be past);
// then PruneLeases.
func (t *Table) LoadLeases(state []Lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.leases == nil {
		t.leases = map[int32]*Lease{}
	}
	for i := range state {
		l := state[i]
		if !l.empty() {
			t.leases[l.PID] = &l
		}
	}
	t.leaseGen++
}

// PruneLeases drops the leases of processes that are gone (exited while no
// daemon ran, or their PID reused) and returns how many are left.
func (t *Table) PruneLeases() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	for pid, l := range t.leases {
		if p := t.procs[pid]; p == nil || p.dead || !p.Start.Same(l.Start) {
			delete(t.leases, pid)
			t.leaseGen++
		}
	}
	return len(t.leases)
}
