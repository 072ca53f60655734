package tracker

import (
	"errors"
	"testing"
	"time"
)

const grace = 30 * time.Second

// sessionTable: bash 100 (from a scan) forks the agent 200, which execs
// claude.
func sessionTable(t *testing.T) (*Table, *fakeProcs, *fakeClock) {
	t.Helper()
	procs := newFakeProcs()
	clock := &fakeClock{now: offset + 1_000}
	procs.stat[100] = shell
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock,
		Leftovers: true, LeftoverGrace: grace, Keep: []Rule{must(ParseRule("keepme"))}})
	tb.Merge(must(procs.Scan()), false)
	forkClaude(tb, procs.stat, 200, 1_000)
	tb.Apply(execEv(200))
	return tb, procs, clock
}

// agentExit: the agent 200 exits; it returns the leftovers queued then.
func agentExit(tb *Table) map[int32]Agent {
	tb.Apply(exitEv(200, 200, 10_000))
	return leftovers(tb)
}

// agentGone: the agent 200 exits, and is reaped (gone from /proc).
func agentGone(tb *Table, procs *fakeProcs) {
	tb.Apply(exitEv(200, 200, 10_000))
	delete(procs.stat, 200)
}

// spawn forks child from parent at ts and, if comm is given, execs it.
func spawn(tb *Table, procs *fakeProcs, parent, child int32, ts uint64, comm string) {
	tb.Apply(fork(parent, child, ts))
	procs.stat[child] = ProcInfo{PID: child, PPID: parent, Start: FromTicks(500), Comm: comm, State: 'S'}
	if comm != "" {
		tb.Apply(execEv(child))
	}
}

func leftovers(tb *Table) map[int32]Agent {
	out := map[int32]Agent{}
	for _, a := range tb.Queue().Snapshot() {
		if a.Reason == ReasonLeftover {
			out[a.PID] = a
		}
	}
	return out
}

func TestSessionLeftovers(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep") // child: a leftover root
	spawn(tb, procs, 210, 220, 3_000, "sleep") // grandchild: dies with 210's tree
	spawn(tb, procs, 220, 221, 3_500, "")      // setsid double-fork: 221 outlives 220
	tb.Apply(exitEv(220, 220, 3_600))          // and is reparented away (in the table: to 210)
	spawn(tb, procs, 200, 230, 4_000, "git")   // exits inside the grace
	spawn(tb, procs, 200, 240, 5_000, "npm")   // REAPER_KEEP=1
	procs.keep[240] = true
	spawn(tb, procs, 240, 241, 5_500, "next-server")  // kept with its parent
	spawn(tb, procs, 200, 250, 6_000, "keepme")       // --keep rule
	spawn(tb, procs, 200, 260, 7_000, "claude")       // nested agent
	spawn(tb, procs, 100, 300, 8_000, "orphan-maker") // not a member

	sid, ok := tb.SessionOf(221)
	if !ok || sid.PID != 200 {
		t.Fatalf("double-forked grandchild: session %+v %v, want 200's", sid, ok)
	}
	if _, ok := tb.SessionOf(300); ok {
		t.Fatal("bash's other child joined the agent's session")
	}
	if a := agents(tb)[260]; a.Reason != ReasonMaxAge || a.Session.PID != 200 {
		t.Fatalf("nested agent %+v: want its own max-age deadline in 200's session", a)
	}
	st := tb.Stats()
	if st.Sessions != 1 || st.SessionMembers != 8 || st.Agents != 2 {
		t.Fatalf("stats %+v: want 1 session of 8 members (220 exited), 2 agents", st)
	}

	const exit = 10_000
	tb.Apply(exitEv(200, 200, exit))
	due := int64(exit) + offset + int64(grace)
	lo := leftovers(tb)
	want := []int32{210, 230, 260}
	if len(lo) != len(want) {
		t.Fatalf("leftovers %v, want roots %v", lo, want)
	}
	for _, pid := range want {
		if a, ok := lo[pid]; !ok || a.Deadline != due || a.Session.PID != 200 {
			t.Errorf("leftover %d: %+v, want deadline agent exit + grace = %d", pid, a, due)
		}
	}
	// 230 exits inside the grace: never signalled. 210 exits: its member
	// child 221 (and 220's orphan) takes its place, same time.
	tb.Apply(exitEv(230, 230, exit+1_000))
	tb.Apply(exitEv(210, 210, exit+2_000))
	lo = leftovers(tb)
	if _, ok := lo[230]; ok {
		t.Error("a leftover that exited is still queued")
	}
	if a, ok := lo[221]; !ok || a.Deadline != due {
		t.Errorf("orphaned member 221: %+v %v, want queued at %d", a, ok, due)
	}
	for _, pid := range []int32{240, 241, 250, 300} {
		if _, ok := lo[pid]; ok {
			t.Errorf("%d queued, but it is kept or not a member", pid)
		}
	}
	if st := tb.Stats(); st.Leftovers != 2 || st.Agents != 0 {
		t.Errorf("stats %+v: want 2 leftovers (221, 260), 0 agents", st)
	}
	// A fork by a leftover during the grace is a member (its tree dies with it).
	spawn(tb, procs, 221, 222, uint64(exit+3_000), "")
	if sid, ok := tb.SessionOf(222); !ok || sid.PID != 200 {
		t.Errorf("fork of a leftover: session %+v %v", sid, ok)
	}
}

// A child forked as a copy of its agent (a nested agent by the name it
// inherited) whose own max-age deadline comes before the agent's exit +
// the grace stays queued as an agent at the exit; when it then execs into
// something no rule matches it is a leftover, not free: before, it left
// the queue and no policy ever took it again.
func TestSessionCopyExecsAfterAgentExit(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	procs.stat[270] = ProcInfo{PID: 270, PPID: 200, Start: FromTicks(500), Comm: "claude", State: 'S'}
	tb.Apply(fork(200, 270, 2_000)) // a copy of claude: an agent by name
	if a := agents(tb)[270]; a.Reason != ReasonMaxAge || a.Session.PID != 200 {
		t.Fatalf("fork copy %+v: want a max-age agent in 200's session", a)
	}
	// The agent exits late enough that the copy's deadline comes first.
	exit := uint64(2_000 + age - grace/2)
	tb.Apply(exitEv(200, 200, exit))
	if a := agents(tb)[270]; a.Reason != ReasonMaxAge {
		t.Fatalf("copy after the agent's exit: %+v, want still its max-age deadline (the earlier)", a)
	}
	procs.stat[270] = ProcInfo{PID: 270, PPID: 1, Start: FromTicks(500), Comm: "sleep", State: 'S'}
	tb.Apply(execEv(270))
	due := int64(exit) + offset + int64(grace)
	if a, ok := leftovers(tb)[270]; !ok || a.Deadline != due || a.Session.PID != 200 {
		t.Fatalf("copy exec'd into sleep after its agent's exit: %+v %v, want a leftover of 200 due at exit + grace = %d", a, ok, due)
	}
}

func TestSessionLeftoversKeep(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	tb.SetLeftovers(false, grace)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	if lo := agentExit(tb); len(lo) != 0 {
		t.Fatalf("--leftovers keep queued %v", lo)
	}
	if st := tb.Stats(); st.Sessions != 1 || st.SessionMembers != 1 {
		t.Errorf("stats %+v: the session lives on with its member", st)
	}
	tb.Apply(exitEv(210, 210, 11_000))
	if st := tb.Stats(); st.Sessions != 0 {
		t.Errorf("stats %+v: a session with no agent and no member is forgotten", st)
	}
}

// An agent reaped at max age: its tree is being killed, so its members are
// not chased again as leftovers; a member outside its tree still is.
func TestSessionReapedAgentLeavesNoLeftovers(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	fired := popOne(t, tb, 1<<62, 200) // the deadline fires: the reaper holds it
	if lo := agentExit(tb); len(lo) != 0 {
		t.Fatalf("the reaped tree's members were queued again: %v", lo)
	}
	tb.Release(fired.Proc())
}

// An agent with REAPER_KEEP=1 in its environment still has its max age,
// and its sessions's limits apply: the mark only spares its descendants
// from leftover kills. An agent a --keep rule matches is exempt from max
// age and from the limits.
func TestSessionKeptAgent(t *testing.T) {
	procs := newFakeProcs()
	procs.stat[100] = shell
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{},
		Leftovers: true, LeftoverGrace: grace, Keep: []Rule{must(ParseRule("claude:--kept"))}})
	tb.Merge(must(procs.Scan()), false)
	forkClaude(tb, procs.stat, 200, 1_000)
	procs.keep[200] = true
	tb.Apply(execEv(200))
	if a, ok := agents(tb)[200]; !ok || a.Reason != ReasonMaxAge {
		t.Fatalf("a REAPER_KEEP=1 agent was not queued for max age: %+v", agents(tb))
	}
	id, _ := tb.SessionOf(200)
	for _, m := range tb.SessionMembers(nil) {
		if m.Session == id && (m.Exempt || m.Kept) {
			t.Errorf("a REAPER_KEEP=1 agent's session is exempt from the limits: %+v", m)
		}
	}
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	procs.keep[210] = true // inherited from the agent
	if _, ok := agentExit(tb)[210]; !ok {
		t.Fatalf("the child of a REAPER_KEEP=1 agent (its environment inherited) is not a leftover: %v", leftovers(tb))
	}

	tb.Apply(fork(100, 300, 11_000))
	procs.stat[300] = ProcInfo{PID: 300, PPID: 100, Start: FromTicks(1_000), Comm: "claude", State: 'S'}
	procs.cmdline[300] = "claude --kept"
	tb.Apply(execEv(300))
	if a, ok := agents(tb)[300]; ok {
		t.Fatalf("an agent a --keep rule matches was queued: %+v", a)
	}
	id3, _ := tb.SessionOf(300)
	if _, err := tb.KillSession(id3, ReasonMemory, Figures{Procs: 1}); !errors.Is(err, ErrExempt) {
		t.Errorf("KillSession of a root-kept agent's session: %v, want ErrExempt", err)
	}
}

// Restarts forget nothing: membership persisted and restored after a
// scan puts the leftover back at its original kill time.
func TestSessionRestore(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	agentGone(tb, procs)
	want := leftovers(tb)[210].Deadline
	state := tb.SessionState()

	// The new daemon's scan sees 210 reparented to PID 1: no lineage.
	procs.stat[210] = ProcInfo{PID: 210, PPID: 1, Start: FromTicks(500), Comm: "sleep", State: 'S'}
	tb2 := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{now: offset + 50_000},
		Leftovers: true, LeftoverGrace: grace})
	tb2.Merge(must(procs.Scan()), false)
	if n := tb2.RestoreSessions(state); n != 1 {
		t.Fatalf("restored %d members, want 1", n)
	}
	if a, ok := leftovers(tb2)[210]; !ok || a.Deadline != want {
		t.Fatalf("restored leftover %+v %v, want its original kill time %d", a, ok, want)
	}
}

// Polling: lineage comes from the polls; a member first seen after its
// agent died is unknown, and left alone.
func TestSessionPolling(t *testing.T) {
	procs := newFakeProcs()
	clock := &fakeClock{now: offset + 1_000}
	procs.stat[100] = shell
	procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(10), Comm: "claude", State: 'S'}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock, Leftovers: true, LeftoverGrace: grace})
	tb.Merge(must(procs.Scan()), false)
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(20), Comm: "sleep", State: 'S'}
	tb.Merge(must(procs.Scan()), false)
	if sid, ok := tb.SessionOf(210); !ok || sid.PID != 200 {
		t.Fatalf("polled child: session %+v %v", sid, ok)
	}
	delete(procs.stat, 200)
	procs.stat[220] = ProcInfo{PID: 220, PPID: 210, Start: FromTicks(30), Comm: "sleep", State: 'S'}
	clock.now = offset + 2_000
	tb.Merge(must(procs.Scan()), false)
	if _, ok := tb.SessionOf(220); ok {
		t.Error("a process first seen after its agent died joined the session")
	}
	if a, ok := leftovers(tb)[210]; !ok || a.Deadline != clock.now+int64(grace) {
		t.Errorf("leftover 210 %+v %v, want the poll that saw the agent gone + grace", a, ok)
	}
}

// Review fixes: a kept process under a leftover survives its tree's kill;
// the keep mark is decided again after exec; a grandchild first seen in the
// same poll as its parent joins the session; an agent fired in a dry run
// still leaves leftovers.
func TestSessionKeptUnderLeftoverRoot(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "bash") // a live shell: the leftover root
	tb.Apply(fork(210, 220, 3_000))           // forks with the shell's env,
	procs.stat[220] = ProcInfo{PID: 220, PPID: 210, Start: FromTicks(500), Comm: "npm", State: 'S'}
	procs.keep[220] = true // then execs REAPER_KEEP=1 npm run dev
	tb.Apply(execEv(220))
	spawn(tb, procs, 220, 221, 3_500, "next-server") // and its dev server
	spawn(tb, procs, 210, 230, 4_000, "sleep")       // not kept
	root, ok := agentExit(tb)[210]
	if !ok {
		t.Fatalf("the shell is not a leftover: %v", leftovers(tb))
	}
	got := map[int32]bool{}
	for _, d := range tb.Descendants(root.Proc(), ReasonLeftover, nil) {
		got[d.PID] = true
	}
	if !got[230] || got[220] || got[221] {
		t.Errorf("the shell's kill would signal %v: want 230, never the kept 220 or its child 221", got)
	}
	// A manual kill is an order: what is kept dies with the rest.
	got = map[int32]bool{}
	for _, d := range tb.Descendants(root.Proc(), ReasonManual, nil) {
		got[d.PID] = true
	}
	if !got[230] || !got[220] || !got[221] {
		t.Errorf("a manual kill of the shell would signal %v: want 220, 221 and 230", got)
	}
}

func TestSessionKeepDecidedAfterExec(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	// The child starts as a copy of claude (an agent itself, not kept)...
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(500), Comm: "claude", State: 'S'}
	tb.Apply(fork(200, 210, 2_000))
	if _, ok := agents(tb)[210]; !ok {
		t.Fatal("the fork of claude is not tracked as an agent")
	}
	// ...then execs with REAPER_KEEP=1.
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(500), Comm: "npm", State: 'S'}
	procs.keep[210] = true
	tb.Apply(execEv(210))
	if lo := agentExit(tb); len(lo) != 0 {
		t.Errorf("kept after exec, but queued: %v", lo)
	}
}

func TestSessionPollingGrandchildren(t *testing.T) {
	for range 20 { // map order varies from run to run
		procs := newFakeProcs()
		procs.stat[100] = shell
		procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(10), Comm: "claude", State: 'S'}
		tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{}, Leftovers: true, LeftoverGrace: grace})
		tb.Merge(must(procs.Scan()), false)
		for i := int32(0); i < 10; i++ { // a chain first seen in one poll
			ppid := 300 + i - 1
			if i == 0 {
				ppid = 200
			}
			procs.stat[300+i] = ProcInfo{PID: 300 + i, PPID: ppid, Start: FromTicks(20), Comm: "sh", State: 'S'}
		}
		tb.Merge(must(procs.Scan()), false)
		for i := int32(0); i < 10; i++ {
			if _, ok := tb.SessionOf(300 + i); !ok {
				t.Fatalf("process %d of a chain seen in one poll is not a member", 300+i)
			}
		}
	}
}

func TestSessionDryRunLeavesLeftovers(t *testing.T) {
	procs := newFakeProcs()
	procs.stat[100] = shell
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{},
		Leftovers: true, LeftoverGrace: grace, DryRun: true})
	tb.Merge(must(procs.Scan()), false)
	spawn(tb, procs, 100, 200, 1_000, "claude")
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	fired := tb.Queue().PopDue(1<<62, nil) // "would kill": nothing signalled
	tb.Apply(exitEv(200, 200, 10_000))     // the agent exits by itself later
	if _, ok := leftovers(tb)[210]; !ok {
		t.Errorf("in a dry run the agent's child is not a leftover: %v", leftovers(tb))
	}
	for _, a := range fired {
		tb.Release(a.Proc())
	}
}

// A restart while the agent lives: the scan's session and the saved one
// are the same session (its start from /proc vs the fork event's).
func TestSessionRestoreLiveAgent(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	state := tb.SessionState()
	procs.stat[210] = ProcInfo{PID: 210, PPID: 1, Start: FromTicks(500), Comm: "sleep", State: 'S'} // reparented
	tb2 := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{now: offset + 50_000},
		Leftovers: true, LeftoverGrace: grace})
	tb2.Merge(must(procs.Scan()), false)
	tb2.RestoreSessions(state)
	if st := tb2.Stats(); st.Sessions != 1 || st.SessionMembers != 2 {
		t.Fatalf("after restore: %+v, want one session of 2 (agent and reparented child)", st)
	}
	tb2.Apply(exitEv(200, 200, 60_000))
	if _, ok := leftovers(tb2)[210]; !ok {
		t.Errorf("the reparented child is not a leftover after the restored agent exits: %v", leftovers(tb2))
	}
}
