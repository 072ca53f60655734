package tracker

import (
	"errors"

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

// limits are the session limits the table checks itself: the procs limit
// at each fork, and how much SessionMembers may read to tell the resource
// sampler which members are kept. They are guarded by the table's lock:
// every method runs with it held (…Locked).
type limits struct {
	maxProcs   int // SetProcsLimit; 0: none
	keepBudget int // SessionMembers: command lines read per call to decide keep rules (SetKeepResolve)
	dryRun     bool
	judge      keptJudge
	kill       sessionKiller
	log        *zap.Logger
}

// keptJudge says which members are root-kept (keeper), under the table's
// lock.
type keptJudge interface {
	// memoLocked: what q's memoised marks say, with nothing read.
	memoLocked(q *Proc) int8
	rootKeptLocked(q *Proc, s *Session, reads *int) int8
	exemptLocked(s *Session, reads *int) bool
}

// sessionKiller queues a session to be killed now (killer), under the
// table's lock.
type sessionKiller interface {
	sessionLocked(s *Session, k kill) (LeaseResult, error)
}

// forkLocked checks the procs limit of the session p just joined.
// Root-kept members (and their descendants) do not count: no policy kills
// them, so they cannot take a session over a limit. A root-kept fork adds
// nothing to count; the session's killable members are counted only when
// all of its members are over the limit. It runs at every fork under the
// table's lock, so it reads nothing: a member counts as kept only if its
// memoised marks (decided at its own fork) say so. Self-marked members
// (REAPER_KEEP=1) count like any other.
func (l *limits) forkLocked(p *Proc) {
	s := p.session
	if l.maxProcs <= 0 || s == nil || s.members <= l.maxProcs || s.pending > 0 || l.dryRun ||
		l.judge.memoLocked(p) == keepYes {
		return
	}
	n := 0
	for q := s.head; q != nil; q = q.snext {
		if !q.dead && l.judge.memoLocked(q) != keepYes {
			n++
		}
	}
	if n <= l.maxProcs {
		return
	}
	fig := Figures{MemoryBytes: -1, Procs: n,
		Details: map[string]float64{"limit": float64(l.maxProcs), "at_fork": 1}}
	res, err := l.kill.sessionLocked(s, kill{why: ReasonProcs, fig: fig})
	switch {
	case errors.Is(err, ErrExempt):
		return
	case err != nil:
		l.log.Debug("procs limit at fork", zap.Int32("session_pid", s.ID.PID), zap.Error(err))
		return
	}
	l.log.Info("session over its procs limit at fork: killing it", zap.Int32("session_pid", s.ID.PID),
		zap.String("comm", s.Comm), zap.Int("procs", n), zap.Int("limit", l.maxProcs),
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

// membersLocked appends every live member of sessions to buf
// (SessionMembers), reading at most keepBudget command lines and no
// environment.
func (l *limits) membersLocked(sessions map[SessionID]*Session, buf []Member) []Member {
	budget := l.keepBudget
	for _, s := range sessions {
		m := Member{Session: s.ID, Comm: s.Comm, Exempt: l.judge.exemptLocked(s, &budget), AgentAlive: s.agent != nil,
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
			m.Kept = l.judge.rootKeptLocked(q, s, &budget) == keepYes
			buf = append(buf, m)
		}
	}
	return buf
}
