package tracker

import (
	"errors"
	"testing"
)

func TestKillSession(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 200, 220, 2_100, "keepme") // kept: spared with its tree
	spawn(tb, procs, 220, 221, 2_200, "")
	id := SessionID{PID: 200, Start: agents(tb)[200].Start}

	var members []Member
	members = tb.SessionMembers(members)
	if len(members) != 4 || members[0].PID != 200 || members[0].Session != id || members[0].Exempt || !members[0].AgentAlive {
		t.Fatalf("members: %+v", members)
	}

	fig := Figures{MemoryBytes: 300 << 20, Procs: 4, Details: map[string]float64{"limit": 200 << 20}}
	res, err := tb.KillSession(id, ReasonMemory, fig)
	if err != nil || len(res.Queued) != 1 || res.Queued[0] != 200 {
		t.Fatalf("kill session: %+v %v; want the agent queued", res, err)
	}
	a := agents(tb)[200]
	if a.Reason != ReasonMemory || a.Deadline != clock.now || a.Figures.MemoryBytes != fig.MemoryBytes || a.Figures.Procs != 4 {
		t.Fatalf("agent after KillSession: %+v", a)
	}
	// The tree kill spares the kept child and its descendants.
	var got []int32
	for _, tg := range tb.Descendants(a.Proc(), ReasonMemory, nil) {
		got = append(got, tg.PID)
	}
	if len(got) != 1 || got[0] != 210 {
		t.Errorf("descendants killed for memory: %v, want [210]", got)
	}
	// Not twice.
	if _, err := tb.KillSession(id, ReasonProcs, fig); !errors.Is(err, ErrKilling) {
		t.Errorf("second KillSession: %v, want ErrKilling", err)
	}
	if _, err := tb.KillSession(SessionID{PID: 4242}, ReasonIdle, fig); !errors.Is(err, ErrNoSession) {
		t.Errorf("unknown session: %v", err)
	}

	// A kept agent: exempt.
	spawn(tb, procs, 100, 300, 3_000, "claude")
	if _, err := tb.Keep(300, Start{}); err != nil {
		t.Fatal(err)
	}
	id3 := SessionID{PID: 300, Start: procs.stat[300].Start}
	if s, ok := tb.SessionOf(300); ok {
		id3 = s
	}
	if _, err := tb.KillSession(id3, ReasonMemory, fig); !errors.Is(err, ErrExempt) {
		t.Errorf("kept agent: %v, want ErrExempt", err)
	}
	for _, m := range tb.SessionMembers(nil) {
		if m.Session == id3 && !m.Exempt {
			t.Errorf("kept session not exempt in the snapshot: %+v", m)
		}
	}

	// A session whose agent exited: its leftovers are killed now.
	spawn(tb, procs, 100, 400, 4_000, "claude")
	spawn(tb, procs, 400, 410, 4_100, "node")
	id4, _ := tb.SessionOf(400)
	tb.Apply(exitEv(400, 400, 5_000))
	if _, err := tb.KillSession(id4, ReasonIdle, Figures{Procs: 1}); err != nil {
		t.Fatal(err)
	}
	if a := agents(tb)[410]; a.Reason != ReasonIdle || a.Deadline != clock.now {
		t.Errorf("leftover after KillSession: %+v", a)
	}
}

func TestProcsLimitAtFork(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	tb.SetProcsLimit(3)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 210, 211, 2_100, "sleep")
	if a := agents(tb)[200]; a.Reason != ReasonMaxAge {
		t.Fatalf("killed at 3 members, limit 3: %+v", a)
	}
	spawn(tb, procs, 211, 212, 2_200, "sleep") // the 4th
	a := agents(tb)[200]
	if a.Reason != ReasonProcs || a.Deadline != clock.now || a.Figures.Procs != 4 || a.Figures.MemoryBytes != -1 {
		t.Fatalf("agent after the 4th fork: %+v", a)
	}
	spawn(tb, procs, 212, 213, 2_300, "sleep") // queued once only
	if n := len(tb.Queue().Snapshot()); n != 1 {
		t.Errorf("%d queued, want 1", n)
	}
}

// killingOf reports the Killing flag of session id in the snapshot, and
// whether the session has members at all.
func killingOf(tb *Table, id SessionID) (killing, found bool) {
	for _, m := range tb.SessionMembers(nil) {
		if m.Session == id {
			return m.Killing, true
		}
	}
	return false, false
}

// releaseJudged wants session id killing while the reaper holds a (while
// says what happens meanwhile), and judged again once a is released: not
// killing, and members left.
func releaseJudged(t *testing.T, tb *Table, id SessionID, a *Agent, while string) {
	t.Helper()
	if k, _ := killingOf(tb, id); !k {
		t.Fatalf("session not killing while %s", while)
	}
	tb.Release(a.Proc())
	if k, found := killingOf(tb, id); k || !found {
		t.Fatalf("after the release: killing %v found %v; want judged again", k, found)
	}
}

// Root-kept members are flagged in the snapshot (with what lies below
// them), so that the sampler leaves them out of the session's figures; a
// self-marked one (REAPER_KEEP=1) is not: the limits count it.
func TestSessionMembersKept(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 200, 220, 2_100, "keepme")
	spawn(tb, procs, 220, 221, 2_200, "node")
	spawn(tb, procs, 200, 230, 2_300, "npm")
	procs.keep[230] = true
	spawn(tb, procs, 230, 231, 2_400, "node")
	kept := map[int32]bool{}
	for _, m := range tb.SessionMembers(nil) {
		kept[m.PID] = m.Kept
	}
	want := map[int32]bool{200: false, 210: false, 220: true, 221: true, 230: false, 231: false}
	for pid, k := range want {
		if kept[pid] != k {
			t.Errorf("pid %d: Kept %v, want %v (%v)", pid, kept[pid], k, kept)
		}
	}
}

// A keep rule that needs the command line is decided within the budget of
// reads; a member not decided yet counts as not kept (killable), never
// hidden.
func TestSessionMembersKeptUnresolved(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	tb.SetKeep([]Rule{must(ParseRule("keepme:dev"))})
	for i := int32(0); i < 2; i++ {
		spawn(tb, procs, 200, 210+i, 2_000+uint64(i), "keepme")
		procs.cmdline[210+i] = "keepme dev"
	}
	count := func() (n int) {
		for _, m := range tb.SessionMembers(nil) {
			if m.PID != 200 && m.Kept {
				n++
			}
		}
		return n
	}
	if n := count(); n != 0 {
		t.Errorf("no budget: %d members counted as kept, want 0 (not decided: not kept)", n)
	}
	tb.SetKeepResolve(1)
	if n := count(); n != 1 {
		t.Errorf("a budget of 1: %d members counted as kept, want 1", n)
	}
	if n := count(); n != 2 {
		t.Errorf("a budget of 1, called again: %d members counted as kept, want 2", n)
	}
}

// The agent queued for a resource kill exits before the kill fires: what
// lies below it is queued at once with the same reason and figures (not as
// leftovers a grace later, even with --leftovers keep), and the session is
// no longer "being killed" once its kills are over.
func TestKillSessionRootExitsFirst(t *testing.T) {
	for _, keepLeftovers := range []bool{false, true} {
		tb, procs, clock := sessionTable(t)
		if keepLeftovers {
			tb.SetLeftovers(false, grace)
		}
		spawn(tb, procs, 200, 210, 2_000, "sleep")
		spawn(tb, procs, 210, 211, 2_100, "sleep")
		spawn(tb, procs, 200, 220, 2_200, "keepme") // kept: never queued
		id, _ := tb.SessionOf(200)
		fig := Figures{MemoryBytes: 300 << 20, Procs: 3, Details: map[string]float64{"limit": 200 << 20}}
		if _, err := tb.KillSession(id, ReasonMemory, fig); err != nil {
			t.Fatal(err)
		}
		if k, _ := killingOf(tb, id); !k {
			t.Fatal("session not killing after KillSession")
		}
		clock.now += 5
		tb.Apply(exitEv(200, 200, 3_000)) // the OOM killer was first
		q := agents(tb)
		a, ok := q[210]
		if len(q) != 1 || !ok || a.Reason != ReasonMemory || a.Deadline != clock.now || a.Figures.MemoryBytes != fig.MemoryBytes {
			t.Fatalf("leftovers keep %v: queue after the agent's exit: %+v; want 210 for memory, now", keepLeftovers, q)
		}
		if k, _ := killingOf(tb, id); !k {
			t.Fatal("session not killing with 210 queued")
		}
		if _, err := tb.KillSession(id, ReasonMemory, fig); !errors.Is(err, ErrKilling) {
			t.Fatalf("KillSession while 210 is queued: %v, want ErrKilling", err)
		}
		// 210 exits before its kill fires too: 211 takes its place.
		tb.Apply(exitEv(210, 210, 3_100))
		if a, ok := agents(tb)[211]; !ok || a.Reason != ReasonMemory {
			t.Fatalf("211 after 210's exit: %+v", agents(tb))
		}
		// 211's kill fires; while the reaper holds it the session is being
		// killed, after Release it is judged again.
		fired := popOne(t, tb, 1<<62, 211)
		if _, err := tb.KillSession(id, ReasonMemory, fig); !errors.Is(err, ErrKilling) {
			t.Fatalf("KillSession while 211 is reaped: %v, want ErrKilling", err)
		}
		tb.Apply(exitEv(211, 211, 3_200))
		releaseJudged(t, tb, id, fired, "the reaper holds 211") // 220 lives
		// Only the kept member is left: nothing to kill, never "killing".
		if _, err := tb.KillSession(id, ReasonMemory, fig); err == nil || errors.Is(err, ErrKilling) {
			t.Fatalf("KillSession with only a kept member: %v", err)
		}
		if k, _ := killingOf(tb, id); k {
			t.Fatal("killing with nothing queued")
		}
	}
}

// A session whose max-age reap is over (with --leftovers keep) is judged
// again for resources, not immune for good.
func TestKillingEndsAfterReap(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	tb.SetLeftovers(false, grace)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 100, 300, 2_100, "") // not a member...
	tb.Apply(fork(210, 211, 2_200))       // 211: a member double-forked away
	procs.stat[211] = ProcInfo{PID: 211, PPID: 210, Start: FromTicks(500), State: 'S'}
	id, _ := tb.SessionOf(200)
	fired := popOne(t, tb, 1<<62, 200)
	tb.Apply(exitEv(200, 200, 10_000))
	tb.Apply(exitEv(210, 210, 10_100))
	releaseJudged(t, tb, id, fired, "its agent's tree is reaped")
	if _, err := tb.KillSession(id, ReasonIdle, Figures{Procs: 1}); err != nil {
		t.Fatalf("KillSession after the reap: %v", err)
	}
	if a := agents(tb)[211]; a.Reason != ReasonIdle {
		t.Fatalf("211: %+v", agents(tb))
	}
}

// Kept members do not count toward the procs limit at fork.
func TestProcsLimitAtForkKept(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	tb.SetProcsLimit(2)
	spawn(tb, procs, 200, 220, 2_000, "keepme")
	spawn(tb, procs, 220, 221, 2_100, "sleep") // kept with its parent
	spawn(tb, procs, 220, 222, 2_200, "sleep")
	spawn(tb, procs, 200, 210, 2_300, "sleep") // 2 killable: 200, 210
	if a := agents(tb)[200]; a.Reason != ReasonMaxAge {
		t.Fatalf("killed with 2 killable members, limit 2: %+v", a)
	}
	spawn(tb, procs, 210, 211, 2_400, "sleep") // the 3rd killable
	if a := agents(tb)[200]; a.Reason != ReasonProcs || a.Figures.Procs != 3 {
		t.Fatalf("after the 3rd killable member: %+v", a)
	}
}
