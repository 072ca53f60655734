package tracker

import (
	"fmt"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"go.uber.org/zap"
)

// SessionID names a session by its agent: PID and start time.
type SessionID struct {
	PID   int32 `json:"pid"`
	Start Start `json:"start"`
}

// IsZero reports whether id names no session.
func (id SessionID) IsZero() bool { return id.PID == 0 }

// Session is an agent (a process matching an agent rule with no agent
// ancestor) and every process descended from it by fork lineage as the
// table saw it, including processes the kernel has since reparented to PID
// 1 or a subreaper: membership is a tag on each process, given at fork, not
// the table's tree, which an exiting parent rearranges. A nested agent
// belongs to the outer session and keeps its own deadline.
//
// When the agent exits, every member still alive is a leftover. Each
// leftover whose nearest live ancestor is not a member (a root: the
// agent's children, a daemon that setsid and double-forked) is queued to be
// killed, with its own descendants, at the agent's exit + the leftover
// grace, through the same deadline queue as agents. A leftover that exits
// during the grace is never signalled; its member children become roots
// with the same deadline.
type Session struct {
	ID         SessionID
	Comm, Rule string
	// cmdline is the agent's command line when it was matched: with Comm,
	// what a reload judges it on (rejudge.go).
	cmdline string
	// ExitedAt is the boottime of the agent's exit, 0 while it lives.
	ExitedAt int64
	// Cgroup is where the agent ran, read when it was matched (cgroup.go).
	Cgroup cgroupinfo.Info

	agent   *Proc // nil once the agent exited
	head    *Proc // members, linked through Proc.snext and Proc.sprev
	members int
	reaped  bool // its agent was fired by a policy: its tree is being killed
	// envMarked: the agent's own environment held REAPER_KEEP=1 (read
	// when it was matched and at each of its execs; for good). Every
	// process it starts inherits that environment, so in such a session
	// the marker says nothing about any process and counts for none
	// (ownEnvLocked): `exec env REAPER_KEEP=1 <agent>` spares nothing.
	envMarked bool
	// pending counts the session's processes queued to be killed now or
	// being reaped (Proc.killFor): the session is being killed while it is
	// above 0 (resources.go). killing is the reason of the latest such
	// kill, for messages.
	pending int
	killing Reason
}

// addMemberLocked tags p as a member of s.
func (t *Table) addMemberLocked(s *Session, p *Proc) {
	if p.session == s {
		return
	}
	if p.session != nil {
		t.dropMemberLocked(p)
	}
	p.session = s
	p.sprev, p.snext = nil, s.head
	if s.head != nil {
		s.head.sprev = p
	}
	s.head = p
	s.members++
	t.members++
	t.sessGen++
}

// dropMemberLocked takes p out of its session, and forgets a session whose
// agent has exited and that has no member left.
func (t *Table) dropMemberLocked(p *Proc) {
	s := p.session
	if s == nil {
		return
	}
	if p.sprev != nil {
		p.sprev.snext = p.snext
	} else {
		s.head = p.snext
	}
	if p.snext != nil {
		p.snext.sprev = p.sprev
	}
	p.session, p.snext, p.sprev = nil, nil, nil
	s.members--
	t.members--
	t.sessGen++
	if s.members == 0 && s.agent == nil {
		delete(t.sessions, s.ID)
	}
}

// newSessionLocked makes the agent p the head of a new session, with every
// live process below it in the table: a process that turns into an agent
// (exec, rename) after forking keeps what it forked.
func (t *Table) newSessionLocked(p *Proc, rule string) *Session {
	s := &Session{ID: SessionID{PID: p.PID, Start: p.Start}, Comm: p.Comm, Rule: rule, agent: p}
	t.sessions[s.ID] = s
	t.addMemberLocked(s, p)
	t.keep.agentEnvLocked(s)
	var walk func(n *Proc)
	walk = func(n *Proc) {
		for c := n.child; c != nil; c = c.next {
			if !c.dead && c.session == nil {
				t.addMemberLocked(s, c)
			}
			walk(c)
		}
	}
	walk(p)
	return s
}

// inheritLocked makes p, just linked to its parent, a member of the
// parent's session. A process first seen by a scan (polling, or a fork
// event that was lost) joins only while the session's agent lives: seen
// after the agent's exit, its lineage is unknown and it is left alone.
// forked: p was just forked (a fork event), so its keep marks are decided
// from its parent's now (forkMarksLocked).
func (t *Table) inheritLocked(p *Proc, forked bool) {
	par := p.parent
	if par == nil || par.session == nil || (!forked && par.session.agent == nil) {
		return
	}
	t.addMemberLocked(par.session, p)
	if forked {
		t.keep.forkMarksLocked(p, par)
		return
	}
	t.keep.scanMarksLocked(p, par)
}

// memberExitLocked handles the exit of a member p of s. fired: p's own
// deadline had fired (a policy is killing its tree); root: p was a leftover
// queued to be killed, whose member children now take its place; k: p was
// queued to be killed now (KillSession, KillNow) and exited first: what its
// kill would have taken is queued now with the same reason and figures —
// not as leftovers a grace later, and whatever --leftovers says.
func (t *Table) memberExitLocked(p *Proc, s *Session, fired, root bool, k *kill) {
	if s.agent == p {
		s.agent = nil
		s.reaped = fired && !t.cfg.DryRun
		s.ExitedAt = t.exitAt
		if s.ExitedAt == 0 {
			s.ExitedAt = t.cfg.Clock.Now()
		}
		t.dropMemberLocked(p)
		t.sessGen++
		if k != nil {
			t.killAgainLocked(sessionRootsLocked(s), s, *k)
			return
		}
		t.leftoversLocked(s, p)
		return
	}
	t.dropMemberLocked(p)
	switch {
	case k != nil:
		t.killAgainLocked(t.rootsBelowLocked(p, s, nil), s, *k)
	case root && t.leftovers:
		reads := 0
		for _, c := range t.rootsBelowLocked(p, s, nil) {
			reads += marksPerProc
			if !t.keep.sparedLocked(c, s, ReasonLeftover, &reads) {
				t.queueLeftoverLocked(c, s)
			}
		}
	}
}

// killAgainLocked queues roots of s to be killed now with k, in place of a
// root of the same kill that exited before its deadline fired.
func (t *Table) killAgainLocked(roots []*Proc, s *Session, k kill) {
	res := LeaseResult{Session: s.ID}
	t.kills.rootsLocked(roots, s.Rule, k, nil, &res)
	if len(res.Queued) > 0 {
		t.log.Debug("kill root exited before its deadline: queued below it", zap.Int32("session_pid", s.ID.PID),
			zap.String("reason", string(k.why)), zap.Int32s("queued", res.Queued))
	}
}

// rootsBelowLocked appends to buf the nearest live members of s below p
// (which exited).
func (t *Table) rootsBelowLocked(p *Proc, s *Session, buf []*Proc) []*Proc {
	for c := p.child; c != nil; c = c.next {
		switch {
		case c.dead:
			buf = t.rootsBelowLocked(c, s, buf)
		case c.session == s:
			buf = append(buf, c)
		}
	}
	return buf
}

// leftoversLocked queues the leftovers of s, whose agent has exited. A tree
// being killed by a policy (the agent reaped at max age) leaves none of its
// own to chase twice.
func (t *Table) leftoversLocked(s *Session, agent *Proc) {
	if !t.leftovers || s.ExitedAt == 0 {
		return
	}
	reads := 0
	for q := s.head; q != nil; q = q.snext {
		if q.dead || (s.reaped && agent != nil && descendsFrom(q, agent)) {
			continue
		}
		if !isRoot(q, s) {
			continue
		}
		if reads += marksPerProc; t.keep.sparedLocked(q, s, ReasonLeftover, &reads) {
			continue
		}
		t.queueLeftoverLocked(q, s)
	}
}

// descendsFrom reports whether a is below p in the table.
func descendsFrom(q, p *Proc) bool {
	for a := q.parent; a != nil; a = a.parent {
		if a == p {
			return true
		}
	}
	return false
}

// isRoot: q's nearest live ancestor in the table is not a member of s, so
// no other leftover's tree kill reaches it.
func isRoot(q *Proc, s *Session) bool {
	a := q.parent
	for a != nil && a.dead {
		a = a.parent
	}
	return a == nil || a.session != s
}

// queueLeftoverLocked queues q to be killed at its session's agent exit +
// the leftover grace. A nested agent keeps its own deadline if that comes
// first.
func (t *Table) queueLeftoverLocked(q *Proc, s *Session) {
	t.queueLeftoverAtLocked(q, s, s.ExitedAt+int64(t.leftoverGrace))
}

// queueLeftoverAtLocked queues q as a leftover of s to be killed at
// deadline.
func (t *Table) queueLeftoverAtLocked(q *Proc, s *Session, deadline int64) {
	if a := q.agent; a != nil {
		// A nested agent: its own deadline stands if it comes first.
		if a.Reason != ReasonLeftover && t.cfg.Queue.RetargetEarlier(a, deadline, ReasonLeftover, s.ID) {
			t.notes.send(agentNotice(NoticeLeftover, a, deadline))
		}
		return
	}
	fillCmdline(t.cfg.Proc, t, q)
	fd := -1
	if t.cfg.Pin != nil {
		var err error
		if fd, err = t.cfg.Pin(q.PID, q.Start); err != nil {
			t.log.Debug("cannot pin leftover", zap.Int32("pid", q.PID), zap.Error(err))
			return // gone (its exit follows) or reused
		}
	}
	a := &Agent{PID: q.PID, Start: q.Start, Comm: q.Comm, Cmdline: q.Cmdline, Rule: s.Rule, FD: fd,
		Reason: ReasonLeftover, Session: s.ID, Deadline: deadline, proc: q, Cgroup: t.cgroupLocked(q)}
	q.agent = a
	q.holds++
	t.cfg.Queue.Add(a)
	t.notes.send(agentNotice(NoticeLeftover, a, deadline))
	t.log.Debug("leftover", zap.Int32("pid", q.PID), zap.String("comm", q.Comm), zap.Int32("session", s.ID.PID),
		zap.Int64("deadline_boot_ns", deadline))
}

// SetLeftovers sets the leftover policy: kill (or keep) and the grace. A
// change applies to agents that exit from now on.
func (t *Table) SetLeftovers(kill bool, grace time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.leftovers, t.leftoverGrace = kill, grace
}

// SetProcsLimit sets the session process limit checked at every fork (0:
// none): a session that keeps forking is queued to be killed (reason procs)
// by the fork that takes it past n, not a sample later. The resource
// sampler checks the same limit at each sample. In a dry run the fork check
// is off: the sampler reports.
func (t *Table) SetProcsLimit(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limits.maxProcs = n
}

// SetKeepResolve sets how many command lines SessionMembers may read per
// call, under the table's lock, to decide whether a --keep rule with
// :TEXT matches a member; 0 reads none (no resource policy is on: the
// figures are only shown). A member not decided yet counts as not kept.
func (t *Table) SetKeepResolve(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limits.keepBudget = n
}

// SetKeep replaces the keep rules: every process's own rule match is
// decided again (a session's agent on what it was matched as); a keep a
// process took from its ancestors stays. What is queued follows
// (reconcileKeepLocked).
func (t *Table) SetKeep(rules []Rule) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keep.rules = rules
	for _, p := range t.procs {
		p.marks.rule = keepUnknown
		if p.marks.root == keepNo {
			p.marks.root = keepUnknown
		}
	}
	t.reconcileKeepLocked()
}

// reconcileKeepLocked brings the queue in line with keep marks a reload
// changed, as a control-socket keep or unkeep does: an agent waiting for
// its max age that is now root-kept, and a leftover waiting for its kill
// that is now spared, leave the queue; a session's agent (or a nested
// agent) no longer kept is queued for its max age, and the leftovers of a
// session whose agent has exited are judged again (queued at the agent's
// exit + the grace, at once if that is past). A kill in progress (a
// retry, a policy's kill now, a session whose agent's tree is being
// reaped) is left alone.
func (t *Table) reconcileKeepLocked() {
	reads := 0
	for _, p := range t.procs {
		if p.dead {
			continue
		}
		s := p.session
		if a := p.agent; a != nil {
			if a.Attempt > 0 || p.killFor != nil {
				continue
			}
			reads += marksPerProc
			switch {
			case a.Reason == ReasonMaxAge && t.keep.rootKeptLocked(p, s, &reads) == keepYes,
				a.Reason == ReasonLeftover && t.keep.sparedLocked(p, s, ReasonLeftover, &reads):
				if t.unqueueLocked(p) {
					t.log.Debug("kept after a reload: dequeued", zap.Int32("pid", p.PID), zap.String("reason", string(a.Reason)))
				}
			}
			continue
		}
		if s != nil {
			t.matchLocked(p, false)
		}
	}
	for _, s := range t.sessions {
		if s.agent == nil && !s.reaped && s.pending == 0 {
			t.leftoversLocked(s, nil)
		}
	}
}

// SetKeepEnv turns the REAPER_KEEP=1 marker on or off (--keep-env). Off,
// it is ignored altogether and nothing is read; turned on again, marks
// are decided from then on (forks meanwhile were not looked at). Queued
// leftovers follow (reconcileKeepLocked).
func (t *Table) SetKeepEnv(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keep.env = on
	for _, s := range t.sessions {
		t.keep.agentEnvLocked(s)
	}
	t.reconcileKeepLocked()
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
// kill, as a --keep rule does (root-kept, marks.go): a queued max-age
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
			if q.agent != nil {
				if t.unqueueLocked(q) {
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
	t.leases.setKeepLocked(p, keep)
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
	if s != nil && t.keep.rootKeptLocked(q, s, reads) == keepYes {
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
	if a != nil && a.session == s && !t.keep.sparedLocked(a, s, ReasonLeftover, reads) {
		return
	}
	if t.keep.sparedLocked(q, s, ReasonLeftover, reads) {
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
			if (!ok || !t.rules.underLocked(p, t.cgroupLocked(p))) && !force {
				return fmt.Errorf("pid %d (%s) is %w: refused without --force", p.PID, p.Comm, ErrNotAgent)
			}
			rule = r
			roots = append(roots, p)
		}
		t.kills.rootsLocked(roots, rule, kill{why: ReasonManual, by: by}, allow, res)
		if len(res.Queued) == 0 && len(res.Busy) == 0 {
			return fmt.Errorf("pid %d (%s): nothing left to kill", p.PID, p.Comm)
		}
		return nil
	})
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
	return t.kills.sessionLocked(s, kill{why: why, fig: fig})
}

// SessionMembers appends every live member of every session to buf, the
// members of one session next to each other, agent first while it lives.
// It holds the table's lock for one pass over the members, reading at most
// keepBudget command lines (SetKeepResolve) and no environment.
func (t *Table) SessionMembers(buf []Member) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limits.membersLocked(t.sessions, buf)
}

// LeftoverView is a leftover waiting for its kill.
type LeftoverView struct {
	PID    int32
	Comm   string
	Start  Start
	KillAt int64 // boottime
	Cgroup cgroupinfo.Info
}

// SessionView is what the table knows of one session.
type SessionView struct {
	ID         SessionID
	Comm, Rule string
	AgentAlive bool
	ExitedAt   int64
	Members    int // live members, the agent included while it lives
	Leftovers  []LeftoverView
	Cgroup     cgroupinfo.Info // the agent's
}

// Sessions returns every session, in no particular order.
func (t *Table) Sessions() []SessionView {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]SessionView, 0, len(t.sessions))
	for _, s := range t.sessions {
		v := SessionView{ID: s.ID, Comm: s.Comm, Rule: s.Rule, AgentAlive: s.agent != nil, ExitedAt: s.ExitedAt, Members: s.members,
			Cgroup: s.Cgroup}
		for q := s.head; q != nil; q = q.snext {
			if a := q.agent; a != nil && a.Reason == ReasonLeftover {
				if at, queued := t.cfg.Queue.DeadlineOf(a); queued {
					v.Leftovers = append(v.Leftovers, LeftoverView{PID: q.PID, Comm: q.Comm, Start: q.Start, KillAt: at, Cgroup: a.Cgroup})
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// SessionOf returns the session pid belongs to.
func (t *Table) SessionOf(pid int32) (SessionID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.procs[pid]; p != nil && p.session != nil {
		return p.session.ID, true
	}
	return SessionID{}, false
}

// MemberState is one session member as persisted across daemon restarts.
type MemberState struct {
	PID     int32     `json:"pid"`
	Start   Start     `json:"start"`
	Session SessionID `json:"session"`
	Comm    string    `json:"session_comm"`
	Rule    string    `json:"session_rule"`
	// ExitedAt is the session agent's exit (boottime), 0 while it lived.
	ExitedAt int64 `json:"agent_exited_at,omitempty"`
	// Its keep marks, which a restart could not tell again once the
	// process they came from is gone (marks.go, "Keep marks").
	// SelfKeep: REAPER_KEEP=1 in its own environment (a later exec
	// decides it again); SelfKeepUp: inherited from a marked ancestor in
	// its session (for good); RootKeep: root-kept by descent from a kept
	// process. AgentMarked: the session's agent carried REAPER_KEEP=1
	// (Session.envMarked), so no environment in it counts.
	SelfKeep    bool `json:"self_keep,omitempty"`
	SelfKeepUp  bool `json:"self_keep_up,omitempty"`
	RootKeep    bool `json:"root_keep,omitempty"`
	AgentMarked bool `json:"agent_marked,omitempty"`
	// Keep is the field of earlier versions, read, never written: it
	// meant "kept" (exempt) by any mark, so it is read as root-kept and
	// self-marked both, never killing what that daemon kept.
	Keep bool `json:"keep,omitempty"`
}

// SessionGen changes whenever session membership changes, so a caller can
// persist SessionState only when there is something new.
func (t *Table) SessionGen() uint64 { return t.gen(&t.sessGen) }

// gen reads one of t's generation counters under its lock.
func (t *Table) gen(g *uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return *g
}

// SessionState returns every live member of every session (agents
// included), for persisting.
func (t *Table) SessionState() []MemberState {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []MemberState
	for _, s := range t.sessions {
		for q := s.head; q != nil; q = q.snext {
			out = append(out, MemberState{PID: q.PID, Start: q.Start, Session: s.ID, Comm: s.Comm, Rule: s.Rule,
				ExitedAt: s.ExitedAt, SelfKeep: q != s.agent && !s.envMarked && q.marks.env == keepYes,
				SelfKeepUp: q.marks.envUp == keepYes, RootKeep: q.marks.root == keepYes, AgentMarked: s.envMarked})
		}
	}
	return out
}

// RestoreSessions gives back the membership a previous run persisted, after
// the start-up scan: a process the scan shows with the same start time
// rejoins its session (the kernel no longer shows who forked a reparented
// process). A session whose agent is gone has its leftovers queued at the
// agent's exit + grace, the original time; an agent that exited while no
// daemon ran is taken to have exited now (later, never early). A session
// that does not stand under the rules and scope in force is dissolved
// instead (restorableLocked); a live agent the scan no longer matches by
// name (it renamed itself) is queued by the rule it matched. It returns
// how many members were restored.
func (t *Table) RestoreSessions(state []MemberState) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	state = t.restorableLocked(state) // rejudge.go: the rules may have changed
	now := t.cfg.Clock.Now()
	touched := map[*Session]bool{}
	n := 0
	for _, m := range state {
		p := t.procs[m.PID]
		if p == nil || !p.Start.Same(m.Start) {
			continue
		}
		s := t.sessions[m.Session]
		ap := t.procs[m.Session.PID]
		if ap != nil && !ap.Start.Same(m.Session.Start) {
			ap = nil // the PID belongs to another process now
		}
		if s == nil && ap != nil && ap.session != nil && ap.session.agent == ap {
			// The agent lives and the start-up scan made it a session
			// again, under its /proc start time (the saved one is the
			// fork event's): the same session.
			s = ap.session
		}
		if s == nil {
			s = &Session{ID: m.Session, Comm: m.Comm, Rule: m.Rule, ExitedAt: m.ExitedAt}
			if ap != nil {
				s.agent, s.ExitedAt = ap, 0
			} else if s.ExitedAt == 0 {
				s.ExitedAt = now
			}
			t.sessions[s.ID] = s
		}
		if p.session != s {
			t.addMemberLocked(s, p)
			n++
		}
		if m.AgentMarked {
			s.envMarked = true
		}
		if m.SelfKeep {
			p.marks.env = keepYes
		}
		// A legacy "keep" (one mark for rule and environment alike) is
		// taken as the weaker of the two, never as root's: a session's
		// own REAPER_KEEP=1 must not turn into root's keep by an upgrade
		// (--keep rules are judged again from the names; control keeps
		// live in leases.json). On the agent itself it says nothing.
		legacy := m.Keep && !m.RootKeep && !m.SelfKeep && !m.SelfKeepUp && p != s.agent
		if (m.SelfKeepUp || legacy) && !s.envMarked {
			p.marks.envUp = keepYes
		}
		if m.RootKeep {
			p.marks.root = keepYes
		}
		touched[s] = true
	}
	for s := range touched {
		if s.agent == nil {
			t.leftoversLocked(s, nil)
		} else {
			t.adoptRestoredLocked(s)
		}
		if s.members == 0 && s.agent == nil {
			delete(t.sessions, s.ID)
		}
	}
	return n
}
