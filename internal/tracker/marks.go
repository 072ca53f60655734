package tracker

import (
	"errors"
	"strings"

	"go.uber.org/zap"
)

// Keep marks. Two notions, never confused:
//
//   - root-kept: root's word — a --keep rule matches the process, or a
//     keep through the control socket names it, or either holds for an
//     ancestor in its session. Exempt from every policy (max age, leftover
//     kills, the resource limits, memory pressure) but a manual kill.
//   - self-marked: REAPER_KEEP=1 in the process's own environment, or in
//     that of an ancestor in its session (with --keep-env on). What a
//     process says about itself only delays cleanup after its agent ends:
//     it spares the process, with its descendants, from leftover kills and
//     from its agent's tree kill at max age. It never removes an agent's
//     own max age, and the limits and the pressure policy count and kill
//     self-marked members like any other. A session's agent is never
//     self-marked, and when its own environment holds the marker, which
//     everything it starts inherits, the marker counts for nothing in its
//     session (Session.envMarked).
//
// A control-socket unkeep overrides both: the process is a candidate
// again, whatever its environment or a rule says.
//
// An unresolved mark (not read yet, a read that failed) counts as not
// kept, so no amount of renaming hides a member from a policy. Each part
// is memoised on its own: a rule match is decided again at each rename and
// exec (rules match the name and command line), the environment only at
// exec (nothing else changes it). What a process descends from is decided
// at fork, while the parent is still there to read (forkMarksLocked), and
// stays.
const (
	keepUnknown int8 = iota
	keepYes
	keepNo
)

// keepMarks are one process's memoised marks, each keepUnknown, keepYes
// or keepNo.
type keepMarks struct {
	rule  int8 // a --keep rule matches its own name and command line
	root  int8 // it descends from a root-kept process in its session
	env   int8 // its own environment holds REAPER_KEEP=1
	envUp int8 // it descends from a self-marked process in its session
}

// or3 combines two marks of which either suffices.
func or3(a, b int8) int8 {
	switch {
	case a == keepYes || b == keepYes:
		return keepYes
	case a == keepNo && b == keepNo:
		return keepNo
	}
	return keepUnknown
}

// liveParent is q's nearest live ancestor in the table.
func liveParent(q *Proc) *Proc {
	a := q.parent
	for a != nil && a.dead {
		a = a.parent
	}
	return a
}

// rootMemo is what q's memoised marks say of root's keep (o: q's keep
// override), with nothing read.
func rootMemo(q *Proc, o int8) int8 {
	if o != keepUnknown {
		return o
	}
	return or3(q.marks.rule, q.marks.root)
}

// keeper decides keep marks: root's keep (the --keep rules, and the
// control socket's keep and unkeep, which it asks the lease book for) and
// REAPER_KEEP=1 (with --keep-env). It owns the keep rules and the
// --keep-env switch; the marks it decides are memoised on each Proc. It
// is guarded by the table's lock: every method runs with it held
// (…Locked).
type keeper struct {
	rules []Rule // --keep
	env   bool   // REAPER_KEEP=1 is honoured (--keep-env)
	over  overrides
	proc  ProcReader // command lines and environments, read under the lock
	errs  readErrs
	log   *zap.Logger
}

// overrides gives root's keep or unkeep of one process through the
// control socket (leaseBook), under the table's lock.
type overrides interface {
	overrideLocked(q *Proc) int8
}

// memoLocked is what q's memoised marks and its keep override say of
// root's keep, with nothing read.
func (k *keeper) memoLocked(q *Proc) int8 { return rootMemo(q, k.over.overrideLocked(q)) }

// rootKeptLocked decides whether q is root-kept. reads, when not nil,
// bounds the /proc reads (command lines, for keep rules with :TEXT) it
// may do, and is decreased by each; a mark it cannot decide without more
// comes back keepUnknown.
func (k *keeper) rootKeptLocked(q *Proc, s *Session, reads *int) int8 {
	if o := k.over.overrideLocked(q); o != keepUnknown {
		return o // keep or unkeep by the operator (leases.go)
	}
	if q.marks.root == keepYes {
		return keepYes
	}
	var own int8
	if s != nil && s.agent == q {
		// A session's agent is judged by what it was matched as, not by
		// a name it gave itself since (and nothing is read for it).
		own = k.agentRuleKeepLocked(s)
	} else {
		own = k.ruleKeptLocked(q, reads)
	}
	return inherit(q, s, own, &q.marks.root, func(a *Proc) int8 { return k.rootKeptLocked(a, s, reads) })
}

// inherit is q's mark: its own, or else the one it inherits from its
// nearest live ancestor in s, which up decides and *memo keeps. It is
// keepUnknown while up cannot decide (it would read more than it may).
func inherit(q *Proc, s *Session, own int8, memo *int8, up func(a *Proc) int8) int8 {
	if own == keepYes {
		return keepYes
	}
	if *memo == keepUnknown {
		m := keepNo
		if a := liveParent(q); a != nil && a.session == s && s != nil {
			m = up(a)
		}
		if m == keepUnknown {
			return keepUnknown
		}
		*memo = m
	}
	return or3(own, *memo)
}

// agentRuleKeepLocked decides whether a --keep rule matches the agent of
// s as it was matched (Session.Comm and cmdline, as a reload judges it),
// so that no rename of the agent gains it root's keep; only a reload of
// the keep rules and root's keep and unkeep change it. Nothing is read.
func (k *keeper) agentRuleKeepLocked(s *Session) int8 {
	for _, r := range k.rules {
		if r.MatchComm(s.Comm) && (r.Text == "" || strings.Contains(s.cmdline, r.Text)) {
			return keepYes
		}
	}
	return keepNo
}

// ruleKeptLocked decides whether a --keep rule matches q itself.
func (k *keeper) ruleKeptLocked(q *Proc, reads *int) int8 {
	if q.marks.rule != keepUnknown {
		return q.marks.rule
	}
	for _, r := range k.rules {
		if !r.MatchComm(q.Comm) {
			continue
		}
		if r.Text == "" {
			q.marks.rule = keepYes
			return keepYes
		}
		if q.Cmdline == "" {
			if reads != nil {
				if *reads <= 0 {
					return keepUnknown
				}
				*reads--
			}
			cl, err := k.proc.Cmdline(q.PID)
			if err != nil {
				k.errs.procErr(q.PID, err)
				return keepUnknown
			}
			q.Cmdline = cl
		}
		if strings.Contains(q.Cmdline, r.Text) {
			q.marks.rule = keepYes
			return keepYes
		}
	}
	q.marks.rule = keepNo
	return keepNo
}

// selfMarkedLocked decides whether q is self-marked (REAPER_KEEP=1 in its
// environment or an ancestor's in its session); keepNo whenever --keep-env
// is off. A session's agent is never self-marked: its mark would spare
// nothing of its own (it is no leftover of its own session, and its max
// age stands), and it does not pass down to what it starts. Below it,
// marks pass down as ever. reads as for rootKeptLocked (environments).
func (k *keeper) selfMarkedLocked(q *Proc, s *Session, reads *int) int8 {
	if !k.env || (s != nil && s.agent == q) {
		return keepNo
	}
	if k.over.overrideLocked(q) == keepNo {
		return keepNo // unkept: a candidate whatever its environment says
	}
	if q.marks.envUp == keepYes {
		return keepYes
	}
	own := k.ownEnvLocked(q, s, reads)
	return inherit(q, s, own, &q.marks.envUp, func(a *Proc) int8 { return k.selfMarkedLocked(a, s, reads) })
}

// ownEnvLocked is q's own environment mark as it counts in s: for
// nothing when s's agent carries the marker itself (Session.envMarked),
// whose environment q inherited.
func (k *keeper) ownEnvLocked(q *Proc, s *Session, reads *int) int8 {
	if s != nil && s.envMarked {
		return keepNo
	}
	return k.envMarkedLocked(q, reads)
}

// agentEnvLocked reads the environment of s's agent (just matched, or
// just exec'd): if it holds REAPER_KEEP=1, the marker counts for nothing
// in s from then on. Read now, while the agent is there to read: after
// it exits, its leftovers are judged by it.
func (k *keeper) agentEnvLocked(s *Session) {
	if !k.env || s.envMarked || s.agent == nil || s.agent.dead {
		return
	}
	if k.envMarkedLocked(s.agent, nil) == keepYes {
		s.envMarked = true
		k.log.Debug("agent carries REAPER_KEEP=1: the marker counts for nothing in its session",
			zap.Int32("session_pid", s.ID.PID), zap.String("comm", s.Comm))
	}
}

// envMarkedLocked reads q's own environment for REAPER_KEEP=1, once per
// exec.
func (k *keeper) envMarkedLocked(q *Proc, reads *int) int8 {
	if q.marks.env != keepUnknown {
		return q.marks.env
	}
	if reads != nil {
		if *reads <= 0 {
			return keepUnknown
		}
		*reads--
	}
	marked, err := k.proc.KeepMarked(q.PID)
	if errors.Is(err, ErrNoEnviron) {
		// An empty environment (env -i) stays empty until the next
		// exec, whose event decides the mark again (execKeepLocked): so
		// does one torn by an execve in progress.
		q.marks.env = keepNo
		return keepNo
	}
	if err != nil {
		k.errs.procErr(q.PID, err)
		return keepUnknown
	}
	q.marks.env = keepNo
	if marked {
		q.marks.env = keepYes
	}
	return q.marks.env
}

// sparedLocked reports whether a kill for why leaves q (and what lies
// below it) alone: never for a manual kill (an order); for a leftover kill
// or an agent's tree at max age, when q is root-kept or self-marked; for
// every other policy (memory, procs, idle, pressure), only when root-kept.
// An unresolved mark spares nothing. reads as for rootKeptLocked.
func (k *keeper) sparedLocked(q *Proc, s *Session, why Reason, reads *int) bool {
	switch why {
	case ReasonManual:
		return false
	case ReasonLeftover, ReasonMaxAge:
		return k.rootKeptLocked(q, s, reads) == keepYes || k.selfMarkedLocked(q, s, reads) == keepYes
	}
	return k.rootKeptLocked(q, s, reads) == keepYes
}

// marksPerProc is what deciding one process's own marks may read: its
// environment and its command line. A pass that judges many processes
// under the table's lock (a tree kill, a session's leftovers) may read
// that much per process it judges, so that marks left unresolved above
// them (a read that failed, which is not memoised) cost a bounded walk:
// its reads grow with its processes, never with their number times their
// depth. A mark the budget leaves undecided counts as not kept.
const marksPerProc = 2

// forkMarksLocked decides the marks of p, just forked by parent into
// parent's session. p starts with its parent's name, command line and a
// copy of its environment, so its own marks are its parent's; what it
// descends from is decided now, while the parent can still be read: a
// marked parent that exits at once still leaves a marked child. The
// parent's environment is read once (memoised on it, so once per process
// and exec), only for session members, only with --keep-env on, and only
// a bounded prefix of it (ProcReader.KeepMarked). If the parent is gone
// already, the child's environment is read instead: it is the parent's
// copy, unless the child has exec'd since.
func (k *keeper) forkMarksLocked(p, parent *Proc) {
	s := p.session
	p.marks.rule = parent.marks.rule
	if s != nil && s.agent == parent {
		p.marks.rule = k.agentRuleKeepLocked(s) // a copy of the agent as judged
	}
	// What p descends from is decided now, while the parent can still be
	// read, so that a forked process sends no later check up its
	// ancestors (only a failed read leaves it to be decided again).
	// A mark left unknown by a failed read (a keep rule's command line)
	// stays unknown, to be decided again: root's word is not lost to an
	// EMFILE. Without a failed read nothing up the chain is unknown.
	p.marks.root = k.rootKeptLocked(parent, s, nil)
	if !k.env {
		return
	}
	up := k.selfMarkedLocked(parent, s, nil)
	p.marks.env = parent.marks.env
	if up == keepUnknown {
		if own := k.ownEnvLocked(p, s, nil); own == keepYes {
			up = keepYes
		} else {
			up = keepNo
		}
	}
	p.marks.envUp = up
	if up == keepYes {
		k.log.Debug("keep mark inherited at fork", zap.Int32("pid", p.PID), zap.Int32("parent", parent.PID))
	}
}

// scanMarksLocked decides what p, seen by a scan below par, takes from
// its parent's marks: what they already say, nothing read (a resync may
// add thousands); the rest is decided when needed.
func (k *keeper) scanMarksLocked(p, par *Proc) {
	if k.memoLocked(par) == keepYes {
		p.marks.root = keepYes
	}
	if k.env && (par.marks.env == keepYes || par.marks.envUp == keepYes) {
		p.marks.envUp = keepYes
	}
}

// exemptLocked: the session's agent lives and is root-kept. reads as for
// rootKeptLocked.
func (k *keeper) exemptLocked(s *Session, reads *int) bool {
	return s.agent != nil && !s.agent.dead && k.rootKeptLocked(s.agent, s, reads) == keepYes
}
