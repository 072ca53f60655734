package tracker

import (
	"testing"
	"time"
)

func TestNotices(t *testing.T) {
	var got []Notice
	procs := newFakeProcs()
	clock := &fakeClock{now: offset + 1_000}
	procs.stat[100] = shell
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock,
		Leftovers: true, LeftoverGrace: grace, OnNotice: func(n Notice) { got = append(got, n) }})
	tb.Merge(must(procs.Scan()), false)
	if len(got) != 0 {
		t.Fatalf("notices for a scan without agents: %+v", got)
	}

	// An agent found: its deadline, rule and session.
	forkClaude(tb, procs.stat, 200, 1_000)
	procs.cmdline[200] = "claude --resume"
	tb.Apply(execEv(200))
	start := int64(1_000) + offset
	if len(got) != 1 {
		t.Fatalf("notices after the agent's exec: %+v", got)
	}
	if n := got[0]; n.Kind != NoticeAgent || n.PID != 200 || n.Rule != "claude" || n.Cmdline != "claude --resume" ||
		n.Deadline != start+int64(age) || n.Session.PID != 200 || n.Start.NS != start || n.Reason != ReasonMaxAge {
		t.Errorf("agent notice %+v", n)
	}

	// A reload: the deadline moves, from the agent's own start.
	got = nil
	tb.SetMaxAge(time.Minute)
	if len(got) != 1 {
		t.Fatalf("notices after a reload: %+v", got)
	}
	if n := got[0]; n.Kind != NoticeDeadline || n.PID != 200 || n.Cause != "reload" ||
		n.Previous != start+int64(age) || n.Deadline != start+int64(time.Minute) {
		t.Errorf("deadline notice %+v", n)
	}
	got = nil
	tb.SetMaxAge(time.Minute) // nothing moves: no notice
	if len(got) != 0 {
		t.Errorf("a reload that moved nothing noticed %+v", got)
	}

	// The agent exits: its child is a leftover, queued at exit + grace.
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	got = nil
	tb.Apply(exitEv(200, 200, 5_000))
	if len(got) != 1 {
		t.Fatalf("notices after the agent's exit: %+v", got)
	}
	if n := got[0]; n.Kind != NoticeLeftover || n.PID != 210 || n.Session.PID != 200 ||
		n.Deadline != 5_000+offset+int64(grace) || n.Reason != ReasonLeftover {
		t.Errorf("leftover notice %+v", n)
	}
	// A leftover's kill time does not move with max age.
	got = nil
	tb.SetMaxAge(2 * time.Minute)
	if len(got) != 0 {
		t.Errorf("a reload moved a leftover: %+v", got)
	}
}

// deadlineMovedLocked is what a lease calls after moving a deadline.
func TestNoticeDeadline(t *testing.T) {
	var got []Notice
	tb := NewTable(Config{Proc: newFakeProcs(), Clock: &fakeClock{}, OnNotice: func(n Notice) { got = append(got, n) }})
	a := &Agent{PID: 9, Comm: "claude", Rule: "claude", Reason: ReasonMaxAge, Session: SessionID{PID: 9}}
	tb.notes.deadlineMovedLocked(a, 10, 10, "extend")
	tb.notes.deadlineMovedLocked(a, 10, 20, "extend")
	if len(got) != 1 || got[0].Kind != NoticeDeadline || got[0].Previous != 10 || got[0].Deadline != 20 || got[0].Cause != "extend" {
		t.Errorf("notices %+v: want one deadline notice 10 → 20", got)
	}
}
