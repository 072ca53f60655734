package tracker

import (
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Figures are a session's resource figures when a policy decided to kill
// it, carried by the Agent to the kill record and the log line.
type Figures struct {
	// MemoryBytes is the session's memory at the decision; -1 when unknown
	// (a procs limit crossed at fork, before any sample).
	MemoryBytes int64
	// Procs is the number of live members; 0 when unknown (no figures).
	Procs int
	// Details holds the policy's own figures for the record: "limit",
	// "idle_seconds", "psi_some_avg10", ...
	Details map[string]float64
}

// Known reports whether f holds figures at all (max age and leftover kills
// have none).
func (f Figures) Known() bool { return f.Procs > 0 || f.MemoryBytes > 0 || len(f.Details) > 0 }

// kill is one order to kill processes now: why, who asked, with what
// figures.
type kill struct {
	why Reason
	by  string
	fig Figures
}

// KillSession queues the whole session id to be killed now, through the
// deadline queue, with reason why and the figures fig: its agent if it
// lives and every member whose nearest live ancestor is not a member, each
// with its tree, exactly as KillNow does for an operator. Unlike an
// operator's kill, what root keeps inside the session (a --keep child, a
// control-socket keep) is left alone with its descendants, and a session
// whose agent root keeps is refused with ErrExempt; REAPER_KEEP=1 spares
// nothing here. A session already queued or being killed is not queued
// twice (ErrKilling).
func (t *Table) KillSession(id SessionID, why Reason, fig Figures) (LeaseResult, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.sessions[id]
	if s == nil {
		return LeaseResult{PID: id.PID, Start: id.Start}, fmt.Errorf("session %d: %w", id.PID, ErrNoSession)
	}
	return t.killSessionLocked(s, kill{why: why, fig: fig})
}

func (t *Table) killSessionLocked(s *Session, k kill) (LeaseResult, error) {
	res := LeaseResult{PID: s.ID.PID, Start: s.ID.Start, Comm: s.Comm, Session: s.ID}
	if s.pending > 0 {
		return res, fmt.Errorf("session %d (%s), %s: %w", s.ID.PID, s.Comm, s.killing, ErrKilling)
	}
	if t.keep.exemptLocked(s, nil) {
		return res, fmt.Errorf("session %d (%s): %w", s.ID.PID, s.Comm, ErrExempt)
	}
	t.killRootsLocked(sessionRootsLocked(s), s.Rule, k, nil, &res)
	switch {
	case len(res.Queued) > 0:
	case len(res.Busy) > 0:
		return res, fmt.Errorf("session %d (%s): %w", s.ID.PID, s.Comm, ErrKilling)
	default:
		return res, fmt.Errorf("session %d (%s): nothing left to kill", s.ID.PID, s.Comm)
	}
	return res, nil
}

// pendLocked counts p's kill toward s (Session.pending) until
// unpendLocked: the session is being killed meanwhile, so neither a limit
// nor the pressure policy queues it again.
func (t *Table) pendLocked(p *Proc, s *Session) {
	if p.killFor == nil && s != nil {
		p.killFor = s
		s.pending++
	}
}

// unpendLocked ends p's count toward its session's kill: its agent left the
// queue unfired (exit, keep) or the reaper released it. A session none of
// whose kills is pending any more is judged again at the next sample.
func (t *Table) unpendLocked(p *Proc) {
	if s := p.killFor; s != nil {
		s.pending--
		p.killFor = nil
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

// killRootsLocked queues each root to be killed now with k, or retargets
// its queued deadline to now. Roots that allow refuses are skipped, and so,
// for every reason but manual (an order), are root-kept ones.
func (t *Table) killRootsLocked(roots []*Proc, rule string, k kill, allow func(pid int32, kthread bool) bool, res *LeaseResult) {
	now := t.cfg.Clock.Now()
	reads := 0 // marksPerProc per root judged
	for _, q := range roots {
		if allow != nil && !allow(q.PID, q.Kthread) {
			continue
		}
		reads += marksPerProc
		if q.session != nil && t.keep.sparedLocked(q, q.session, k.why, &reads) {
			continue
		}
		if a := q.agent; a != nil {
			if t.cfg.Queue.retargetNow(a, now, k) {
				res.Queued = append(res.Queued, q.PID)
				t.pendKillLocked(q, k)
			} else {
				res.Busy = append(res.Busy, q.PID)
				if q.holds > 0 {
					t.pendKillLocked(q, k) // fired, being reaped: Release ends it
				}
			}
			continue
		}
		if q.Cmdline == "" {
			if cl, err := t.cfg.Proc.Cmdline(q.PID); err == nil {
				q.Cmdline = cl
			}
		}
		fd := -1
		if t.cfg.Pin != nil {
			var err error
			if fd, err = t.cfg.Pin(q.PID, q.Start); err != nil {
				continue // gone (its exit follows) or reused
			}
		}
		a := &Agent{PID: q.PID, Start: q.Start, Comm: q.Comm, Cmdline: q.Cmdline, Rule: rule, FD: fd,
			Reason: k.why, Session: res.Session, Deadline: now, RequestedBy: k.by, Figures: k.fig, proc: q, Cgroup: t.cgroupLocked(q)}
		q.agent = a
		q.holds++
		t.cfg.Queue.Add(a)
		res.Queued = append(res.Queued, q.PID)
		t.pendKillLocked(q, k)
	}
}

// pendKillLocked counts q, just queued (or found being reaped) for k, toward
// its session's kill.
func (t *Table) pendKillLocked(q *Proc, k kill) {
	if s := q.session; s != nil {
		t.pendLocked(q, s)
		s.killing = k.why
	}
}

// SetProcsLimit sets the session process limit checked at every fork (0:
// none): a session that keeps forking is queued to be killed (reason procs)
// by the fork that takes it past n, not a sample later. The resource
// sampler checks the same limit at each sample. In a dry run the fork check
// is off: the sampler reports.
func (t *Table) SetProcsLimit(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxProcs = n
}

// SetKeepResolve sets how many command lines SessionMembers may read per
// call, under the table's lock, to decide whether a --keep rule with
// :TEXT matches a member; 0 reads none (no resource policy is on: the
// figures are only shown). A member not decided yet counts as not kept.
func (t *Table) SetKeepResolve(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keepBudget = n
}

// forkLimitLocked checks the procs limit of the session p just joined.
// Root-kept members (and their descendants) do not count: no policy kills
// them, so they cannot take a session over a limit. A root-kept fork adds
// nothing to count; the session's killable members are counted only when
// all of its members are over the limit. It runs at every fork under the
// table's lock, so it reads nothing: a member counts as kept only if its
// memoised marks (decided at its own fork) say so. Self-marked members
// (REAPER_KEEP=1) count like any other.
func (t *Table) forkLimitLocked(p *Proc) {
	s := p.session
	if t.maxProcs <= 0 || s == nil || s.members <= t.maxProcs || s.pending > 0 || t.cfg.DryRun ||
		t.keep.memoLocked(p) == keepYes {
		return
	}
	n := 0
	for q := s.head; q != nil; q = q.snext {
		if !q.dead && t.keep.memoLocked(q) != keepYes {
			n++
		}
	}
	if n <= t.maxProcs {
		return
	}
	fig := Figures{MemoryBytes: -1, Procs: n,
		Details: map[string]float64{"limit": float64(t.maxProcs), "at_fork": 1}}
	res, err := t.killSessionLocked(s, kill{why: ReasonProcs, fig: fig})
	switch {
	case errors.Is(err, ErrExempt):
		return
	case err != nil:
		t.log.Debug("procs limit at fork", zap.Int32("session_pid", s.ID.PID), zap.Error(err))
		return
	}
	t.log.Info("session over its procs limit at fork: killing it", zap.Int32("session_pid", s.ID.PID),
		zap.String("comm", s.Comm), zap.Int("procs", n), zap.Int("limit", t.maxProcs),
		zap.Int32s("queued", res.Queued))
}

// Member is one live member of a session, with what the resource sampler
// needs of its session.
type Member struct {
	Session SessionID
	PID     int32
	Start   Start
	// Comm is the session's (its agent's) name.
	Comm string
	// Exempt: the session's agent is root-kept (a --keep rule, a
	// control-socket keep; never REAPER_KEEP=1); AgentAlive: it lives.
	Exempt, AgentAlive bool
	// Killing: processes of the session are queued to be killed now or
	// being reaped (a resource, pressure or manual kill, or the agent's
	// tree reaped at max age).
	Killing bool
	// Kept: this member is root-kept (a --keep rule, a keep through the
	// control socket, or below such a process): no policy but a manual
	// kill touches it, so it does not count toward its session's limits.
	// A self-marked member (REAPER_KEEP=1) is not Kept: the limits and the
	// pressure policy count and kill it like any other. Not decided yet
	// (a keep rule's :TEXT not read within the budget): not Kept.
	Kept bool
}

// SessionMembers appends every live member of every session to buf, the
// members of one session next to each other, agent first while it lives.
// It holds the table's lock for one pass over the members, reading at most
// keepBudget command lines (SetKeepResolve) and no environment.
func (t *Table) SessionMembers(buf []Member) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	budget := t.keepBudget
	for _, s := range t.sessions {
		m := Member{Session: s.ID, Comm: s.Comm, Exempt: t.keep.exemptLocked(s, &budget), AgentAlive: s.agent != nil,
			Killing: s.pending > 0}
		if a := s.agent; a != nil && !a.dead {
			m.PID, m.Start, m.Kept = a.PID, a.Start, m.Exempt
			buf = append(buf, m)
		}
		for q := s.head; q != nil; q = q.snext {
			if q == s.agent || q.dead {
				continue
			}
			m.PID, m.Start = q.PID, q.Start
			// Memoised (the rule's match until q renames or execs,
			// its descent for good): a member costs a read once. Not
			// decided within the budget: counted, never hidden.
			m.Kept = t.keep.rootKeptLocked(q, s, &budget) == keepYes
			buf = append(buf, m)
		}
	}
	return buf
}
