package tracker

import (
	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"go.uber.org/zap"
)

// Rules change, sessions follow. An agent stays one whatever it does to
// itself (matchLocked), but root can change what an agent is: a reload
// that changes the rules or the scope (SetRules), or a restart under other
// rules (RestoreSessions). Then every agent is judged again, and a session
// whose agent no longer matches is dissolved: the agent leaves the queue
// and its members are no longer members, so nothing is killed later as a
// "leftover" of something that is no longer an agent.
//
// What an agent is judged on is what it was matched on: the rule, comm and
// command line recorded when it was matched (Agent.Comm and Cmdline,
// Session.Comm and cmdline), not its name of the moment. It still matches
// if the rule it matched is still in force, or if that comm and command
// line match one of the new rules; and its scope is checked against its
// ancestors and its recorded cgroup. Judged on its current name instead,
// an agent that renamed itself "node" would be let go by any reload that
// touched the rules — one that only added a rule for something else.
//
// A session whose agent has exited is dissolved when the rule its agent
// matched is no longer in force. Its scope cannot be judged again (its
// agent's ancestry is gone with it) and is left as it was.
//
// A session being killed (a kill queued now or in flight, or its agent's
// deadline fired) is left to its kill, which root's rules decided then.
//
// The verdict is the agent rules' (agentRules, rules.go: the rules and
// scope in force, inForceLocked, judgeLocked, underLocked). Acting on it
// rebuilds sessions (dissolve one, give a nested agent a session of its
// own, queue an agent again), which is the table's work, here, under its
// lock.

// busyLocked: s is being killed (a kill queued now, or reaped), or its
// agent's deadline fired and the reaper holds it.
func (t *Table) busyLocked(s *Session) bool {
	if s.pending > 0 {
		return true
	}
	if ap := s.agent; ap != nil {
		if a := ap.agent; a != nil && !t.cfg.Queue.Queued(a) && ap.holds > 0 {
			return true
		}
	}
	return false
}

// revival is an agent to queue again for its max age once the sessions
// are rebuilt, as it was matched.
type revival struct {
	p                   *Proc
	rule, comm, cmdline string
	cg                  cgroupinfo.Info
}

// rejudgeLocked judges every agent again under the rules and scope in
// force (SetRules has just set them).
func (t *Table) rejudgeLocked() {
	var revive []revival
	for _, s := range t.sessions {
		if t.busyLocked(s) {
			continue
		}
		ap := s.agent
		if ap == nil {
			if !t.rules.inForceLocked(s.Rule) {
				revive = t.dissolveLocked(s, "reload", revive)
			}
			continue
		}
		rule, ok := t.rules.judgeLocked(s.Rule, s.Comm, s.cmdline, ap.Kthread)
		if !ok || !t.rules.underLocked(ap, s.Cgroup) {
			revive = t.dissolveLocked(s, "reload", revive)
			continue
		}
		if rule != s.Rule {
			// Still an agent, by another rule: the records name that one.
			s.Rule = rule
			if a := ap.agent; a != nil && t.unqueueLocked(ap) {
				t.queueAgentLocked(ap, rule, a.Comm, a.Cmdline, a.Cgroup)
			}
		}
	}
	// Nested agents in the sessions that stand, judged on their own. A
	// retry of a failed kill (of an agent at max age: its reason stays
	// max_age) is no nested agent: the kill was decided, it stands.
	for _, p := range t.procs {
		a := p.agent
		if a == nil || a.Reason != ReasonMaxAge || a.Attempt > 0 || !t.cfg.Queue.Queued(a) {
			continue
		}
		if s := p.session; s != nil && s.agent == p {
			continue // judged with its session
		}
		rule, ok := t.rules.judgeLocked(a.Rule, a.Comm, a.Cmdline, p.Kthread)
		if !ok || !t.rules.underLocked(p, a.Cgroup) {
			if t.unqueueLocked(p) {
				t.log.Info("agent no longer matches the agent rules or scope: no deadline", zap.Int32("pid", p.PID),
					zap.String("comm", a.Comm), zap.String("rule", a.Rule), zap.String("cause", "reload"))
			}
			continue
		}
		if rule != a.Rule {
			// Its rule changed: queued again, with the same deadline.
			if t.unqueueLocked(p) {
				revive = append(revive, revival{p: p, rule: rule, comm: a.Comm, cmdline: a.Cmdline, cg: a.Cgroup})
			}
		}
	}
	t.reviveLocked(revive)
}

// dissolveLocked ends session s: its agent's deadline and its leftovers'
// kills are taken back and its members are no longer members. A nested
// agent (queued for its max age, or become a leftover of s) that is still
// an agent is taken off the queue and appended to revive, to be queued
// again for its max age in a session of its own (reviveLocked). cause says
// what judged it. A retry of a failed kill (Attempt > 0) stays queued:
// the kill was decided under the rules of its time.
func (t *Table) dissolveLocked(s *Session, cause string, revive []revival) []revival {
	alive, members := s.agent != nil, s.members
	if ap := s.agent; ap != nil {
		if a := ap.agent; a != nil && a.Reason == ReasonMaxAge && a.Attempt == 0 {
			t.unqueueLocked(ap)
		}
		s.agent = nil
	}
	for q := s.head; q != nil; {
		next := q.snext
		// A nested agent, queued for its max age or become a leftover of
		// s: queued again, heading a session of its own, if it is still an
		// agent.
		if a := q.agent; a != nil && a.Attempt == 0 && (a.Reason == ReasonLeftover || a.Reason == ReasonMaxAge) && t.unqueueLocked(q) {
			if rule, ok := t.rules.judgeLocked(a.Rule, a.Comm, a.Cmdline, q.Kthread); ok && t.rules.underLocked(q, a.Cgroup) {
				revive = append(revive, revival{p: q, rule: rule, comm: a.Comm, cmdline: a.Cmdline, cg: a.Cgroup})
			}
		}
		t.dropMemberLocked(q)
		q = next
	}
	delete(t.sessions, s.ID)
	t.sessGen++
	t.log.Info("session dissolved: its agent no longer matches the agent rules or scope", zap.Int32("session_pid", s.ID.PID),
		zap.String("comm", s.Comm), zap.String("rule", s.Rule), zap.Bool("agent_alive", alive), zap.Int("members", members),
		zap.String("cause", cause))
	return revive
}

// reviveLocked queues each agent in revive for its max age, heading a
// session of its own unless it is in one or an agent above it in revive
// heads one: ancestors first, so that an agent below another belongs to
// the outer session, as at fork.
func (t *Table) reviveLocked(revive []revival) {
	if len(revive) == 0 {
		return
	}
	set := make(map[*Proc]bool, len(revive))
	for _, r := range revive {
		set[r.p] = true
	}
	for _, r := range revive {
		p := r.p
		if p.session != nil || p.dead {
			continue
		}
		top := true
		for a := p.parent; a != nil && top; a = a.parent {
			top = !set[a]
		}
		if top {
			s := t.newSessionLocked(p, r.rule)
			s.Comm, s.cmdline, s.Cgroup = r.comm, r.cmdline, r.cg
		}
	}
	for _, r := range revive {
		p := r.p
		if p.dead || p.agent != nil || p.session == nil || t.keep.rootKeptLocked(p, p.session, nil) == keepYes {
			continue
		}
		t.queueAgentLocked(p, r.rule, r.comm, r.cmdline, r.cg)
	}
}

// restorableLocked returns the members of state whose sessions stand under
// the rules and scope in force, and dissolves the others (logged). A
// session whose agent lives stands if the start-up scan made it a session
// agent, or if the rule it matched before the restart is still in force
// and it is in scope: a restart does not end an agent that renamed itself
// (a renamed agent is, like its own renames, no reason to let it go). A
// session whose agent is gone stands if that rule is still in force.
func (t *Table) restorableLocked(state []MemberState) []MemberState {
	stands := map[SessionID]bool{}
	members := map[SessionID]int{}
	out := make([]MemberState, 0, len(state))
	for _, m := range state {
		ok, seen := stands[m.Session]
		if !seen {
			ok = t.restoreStandsLocked(m)
			stands[m.Session] = ok
		}
		if ok {
			out = append(out, m)
		} else {
			members[m.Session]++
		}
	}
	for _, m := range state {
		n, ok := members[m.Session]
		if !ok {
			continue
		}
		delete(members, m.Session)
		t.log.Info("session dissolved: its agent no longer matches the agent rules or scope", zap.Int32("session_pid", m.Session.PID),
			zap.String("comm", m.Comm), zap.String("rule", m.Rule), zap.Bool("agent_alive", m.ExitedAt == 0 && t.liveAgentLocked(m.Session) != nil),
			zap.Int("members", n), zap.String("cause", "restart"))
	}
	return out
}

// liveAgentLocked returns the live process that is the agent of session
// id, or nil.
func (t *Table) liveAgentLocked(id SessionID) *Proc {
	if ap := t.procs[id.PID]; ap != nil && !ap.dead && ap.Start.Same(id.Start) {
		return ap
	}
	return nil
}

// restoreStandsLocked judges the persisted session of m.
func (t *Table) restoreStandsLocked(m MemberState) bool {
	ap := t.liveAgentLocked(m.Session)
	if ap == nil {
		return t.rules.inForceLocked(m.Rule)
	}
	if s := ap.session; s != nil && s.agent == ap {
		return true // matched by the start-up scan, under the rules in force
	}
	return !ap.Kthread && t.rules.inForceLocked(m.Rule) && t.rules.underLocked(ap, t.cgroupLocked(ap))
}

// adoptRestoredLocked queues the live agent of the restored session s for
// its max age if the start-up scan did not (it no longer shows the name it
// was matched by), unless it is kept.
func (t *Table) adoptRestoredLocked(s *Session) {
	ap := s.agent
	if ap == nil || ap.dead || ap.agent != nil || ap.session != s {
		return
	}
	if s.Cgroup.Path == "" {
		s.Cgroup = t.cgroupLocked(ap)
	}
	fillCmdline(t.cfg.Proc, t, ap)
	if s.cmdline == "" {
		s.cmdline = ap.Cmdline
	}
	if t.keep.rootKeptLocked(ap, s, nil) == keepYes {
		return
	}
	t.queueAgentLocked(ap, s.Rule, s.Comm, s.cmdline, s.Cgroup)
}
