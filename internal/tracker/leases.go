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
//
// The commands are the table's (Extend and ExtendUntil in table.go; Keep,
// Unkeep and KillNow in sessions.go): each finds the process under the
// table's lock and acts on its entry and its session. What root said is
// kept here, in the table's leaseBook, which also moves an agent's queued
// deadline with its lease.

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

// leaseResult is what every lease command answers about p.
func leaseResult(p *Proc) LeaseResult {
	res := LeaseResult{PID: p.PID, Comm: p.Comm, Start: p.Start}
	if p.session != nil {
		res.Session = p.session.ID
	}
	return res
}

// leaseBook holds root's word on single processes (their Lease), by PID,
// and moves an agent's queued deadline with its lease. It is guarded by
// the table's lock: every method runs with it held (…Locked).
type leaseBook struct {
	m   map[int32]*Lease
	gen uint64 // changes whenever a lease changes or ends (LeaseGen)

	// What moving a deadline takes: the queue, the rule that computes an
	// agent's deadline with its lease (Table.agentDeadline), and who is
	// told of the move.
	queue    *Deadlines
	deadline func(*Agent) int64
	notes    notifier
}

// getLocked returns p's lease (created when create is set), or nil.
func (b *leaseBook) getLocked(p *Proc, create bool) *Lease {
	l := b.m[p.PID]
	if l != nil && !l.Start.Same(p.Start) {
		delete(b.m, p.PID) // an earlier holder of the PID: ended with it
		l = nil
	}
	if l == nil && create {
		if b.m == nil {
			b.m = map[int32]*Lease{}
		}
		l = &Lease{PID: p.PID, Start: p.Start}
		b.m[p.PID] = l
	}
	return l
}

// endLocked forgets the lease of p, which exited.
func (b *leaseBook) endLocked(p *Proc) {
	if l := b.m[p.PID]; l != nil && l.Start.Same(p.Start) {
		delete(b.m, p.PID)
		b.gen++
	}
}

// agentLocked gives a, about to be queued for its max age, the lease of
// its process.
func (b *leaseBook) agentLocked(a *Agent) {
	if l := b.getLocked(a.proc, false); l != nil {
		a.extra, a.until = int64(l.Extra), l.Until
	}
}

// overrideLocked is q's keep override: keepYes, keepNo or keepUnknown
// (none).
func (b *leaseBook) overrideLocked(q *Proc) int8 {
	if len(b.m) == 0 {
		return keepUnknown
	}
	switch l := b.getLocked(q, false); {
	case l == nil:
	case l.Keep == LeaseKeep:
		return keepYes
	case l.Keep == LeaseUnkeep:
		return keepNo
	}
	return keepUnknown
}

// setKeepLocked records root's keep (LeaseKeep) or unkeep (LeaseUnkeep)
// of p.
func (b *leaseBook) setKeepLocked(p *Proc, keep string) {
	b.getLocked(p, true).Keep = keep
	b.gen++
}

// moveLocked changes the lease of p, an agent waiting for its max age,
// with fn, and moves its queued deadline (Extend, ExtendUntil).
func (b *leaseBook) moveLocked(p *Proc, fn func(Lease) (Lease, error), res *LeaseResult) error {
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
		case rootMemo(p, b.overrideLocked(p)) == keepYes:
			what = "kept: no deadline to extend"
		}
		return fmt.Errorf("pid %d (%s) is %s", p.PID, p.Comm, what)
	}
	old := b.getLocked(p, false)
	var cur Lease
	if old != nil {
		cur = *old
	}
	cur.PID, cur.Start = p.PID, p.Start
	next, err := fn(cur)
	if err != nil {
		return err
	}
	previous, deadline, ok := b.queue.setLease(a, int64(next.Extra), next.Until, b.deadline)
	if !ok {
		res.Busy = []int32{p.PID}
		return fmt.Errorf("pid %d (%s) is already being killed", p.PID, p.Comm)
	}
	*b.getLocked(p, true) = next
	b.gen++
	b.notes.deadlineMovedLocked(a, previous, deadline, "extend")
	res.Deadline, res.Extra = deadline, next.Extra
	return nil
}

// stateLocked returns every lease of a process live in procs, for
// persisting.
func (b *leaseBook) stateLocked(procs map[int32]*Proc) []Lease {
	out := make([]Lease, 0, len(b.m))
	for pid, l := range b.m {
		if p := procs[pid]; p != nil && !p.dead && p.Start.Same(l.Start) && !l.empty() {
			out = append(out, *l)
		}
	}
	return out
}

// loadLocked takes the leases a previous run persisted.
func (b *leaseBook) loadLocked(state []Lease) {
	if b.m == nil {
		b.m = map[int32]*Lease{}
	}
	for i := range state {
		l := state[i]
		if !l.empty() {
			b.m[l.PID] = &l
		}
	}
	b.gen++
}

// pruneLocked drops the leases of processes procs does not hold (exited
// while no daemon ran, or their PID reused) and returns how many are left.
func (b *leaseBook) pruneLocked(procs map[int32]*Proc) int {
	for pid, l := range b.m {
		if p := procs[pid]; p == nil || p.dead || !p.Start.Same(l.Start) {
			delete(b.m, pid)
			b.gen++
		}
	}
	return len(b.m)
}
