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
