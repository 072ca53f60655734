package tracker

import (
	"errors"
	"testing"
	"time"
)

func TestExtend(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	start := agents(tb)[200].Start
	base := start.Latest() + int64(age)
	if _, err := tb.Extend(200, Start{}, 0); err == nil {
		t.Error("extend by 0 accepted")
	}
	res, err := tb.Extend(200, Start{}, 10*time.Minute)
	if err != nil || res.Deadline != base+int64(10*time.Minute) || agents(tb)[200].Deadline != res.Deadline {
		t.Fatalf("extend: %+v %v; queued %d; want %d", res, err, agents(tb)[200].Deadline, base+int64(10*time.Minute))
	}
	res, _ = tb.Extend(200, start, 5*time.Minute)
	if res.Deadline != base+int64(15*time.Minute) || res.Extra != 15*time.Minute {
		t.Fatalf("extends add up: %+v", res)
	}
	// A reload keeps the extends: start + new max age + their sum.
	tb.SetMaxAge(2 * time.Hour)
	if d := agents(tb)[200].Deadline; d != start.Latest()+int64(2*time.Hour+15*time.Minute) {
		t.Fatalf("after a max-age reload the deadline is %d, want start + 2h + 15m", d)
	}
	// A wrong start time is another process.
	if _, err := tb.Extend(200, Start{NS: 42, Exact: true}, time.Minute); !errors.Is(err, ErrNoProcess) {
		t.Errorf("extend of a reused PID: %v", err)
	}
	// --until sets it outright; an extend after moves it on.
	until := clock.now + int64(time.Hour)
	if _, err := tb.ExtendUntil(200, Start{}, clock.now-1); err == nil {
		t.Error("a deadline in the past accepted")
	}
	if res, err := tb.ExtendUntil(200, Start{}, until); err != nil || agents(tb)[200].Deadline != until {
		t.Fatalf("until: %+v %v", res, err)
	}
	tb.SetMaxAge(time.Minute)
	if res, _ := tb.Extend(200, Start{}, time.Minute); res.Deadline != until+int64(time.Minute) || agents(tb)[200].Deadline != res.Deadline {
		t.Fatalf("extend after until: %+v", res)
	}
	// Not an agent: refused, with the reason.
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	if _, err := tb.Extend(210, Start{}, time.Minute); err == nil {
		t.Error("extend of a non-agent accepted")
	}
	if _, err := tb.Extend(999, Start{}, time.Minute); !errors.Is(err, ErrNoProcess) {
		t.Errorf("extend of an unknown pid: %v", err)
	}
	// The lease ends with the process.
	if n := len(tb.LeaseState()); n != 1 {
		t.Fatalf("%d leases, want 1", n)
	}
	tb.Apply(exitEv(200, 200, 10_000))
	if n := len(tb.LeaseState()); n != 0 {
		t.Errorf("%d leases after the agent exited, want 0", n)
	}
}

// A restart: the leases are loaded before the start-up scan is merged, so
// the agent is never queued at its bare max age; gone processes' leases are
// pruned.
func TestLeasesRestored(t *testing.T) {
	tb, _, _ := sessionTable(t)
	tb.Extend(200, Start{}, time.Hour)
	state := append(tb.LeaseState(), Lease{PID: 4242, Start: FromTicks(7), Extra: time.Hour})

	procs := newFakeProcs()
	// Same start: the scan's tick holds the exact start of the fork event.
	exact := agents(tb)[200].Start
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: Start{NS: exact.NS / Tick * Tick}, Comm: "claude", State: 'S'}
	tb2 := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{}, Leftovers: true, LeftoverGrace: grace})
	var al recAlarm
	tb2.Queue().SetAlarm(&al)
	tb2.LoadLeases(state)
	tb2.Merge(must(procs.Scan()), false)
	if n := tb2.PruneLeases(); n != 1 {
		t.Errorf("%d leases left after pruning, want 1", n)
	}
	a := agents(tb2)[200]
	if want := a.Start.Latest() + int64(age+time.Hour); a.Deadline != want {
		t.Fatalf("restored agent deadline %d, want start + max age + 1h = %d", a.Deadline, want)
	}
	for _, next := range al.next {
		if next != 0 && next < a.Deadline {
			t.Fatalf("the alarm was set to %d, before the leased deadline %d", next, a.Deadline)
		}
	}
}

func TestKeepUnkeep(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 210, 211, 2_100, "sleep")
	spawn(tb, procs, 200, 220, 2_200, "sleep")
	const exit = 10_000
	clock.now = exit + offset
	tb.Apply(exitEv(200, 200, exit))
	if lo := leftovers(tb); len(lo) != 2 {
		t.Fatalf("leftovers %v, want 210 and 220", lo)
	}
	// keep 210: its queued leftover kill is taken back; 211 is kept with it.
	res, err := tb.Keep(210, Start{})
	if err != nil || len(res.Dequeued) != 1 || res.Dequeued[0] != 210 {
		t.Fatalf("keep: %+v %v", res, err)
	}
	if _, ok := leftovers(tb)[210]; ok {
		t.Fatal("kept leftover still queued")
	}
	// Its descendants are kept: a child forked now is not queued when 210
	// exits... and 211 is never a root while kept.
	tb.mu.Lock()
	kept211 := tb.keep.rootKeptLocked(tb.procs[211], tb.procs[211].session, nil) == keepYes
	tb.mu.Unlock()
	if !kept211 {
		t.Error("the kept process's child is not kept")
	}
	// unkeep within the grace: queued again at the original exit + grace.
	res, err = tb.Unkeep(210, Start{})
	due := int64(exit) + offset + int64(grace)
	if a, ok := leftovers(tb)[210]; err != nil || !ok || a.Deadline != due {
		t.Fatalf("unkeep within the grace: %+v %v, queued %+v; want at %d", res, err, a, due)
	}
	if _, ok := leftovers(tb)[211]; ok {
		t.Error("211 queued apart: its parent's tree kill takes it")
	}
	// keep then unkeep after the grace: queued now.
	tb.Keep(210, Start{})
	clock.now = due + int64(time.Minute)
	tb.Unkeep(210, Start{})
	if a := leftovers(tb)[210]; a.Deadline != clock.now {
		t.Errorf("unkeep after the grace: deadline %d, want now %d", a.Deadline, clock.now)
	}
}

func TestKeepAgent(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 200, 260, 3_000, "claude") // nested agent
	res, err := tb.Keep(200, Start{})
	if err != nil || len(res.Dequeued) != 2 {
		t.Fatalf("keep agent: %+v %v; want 200 and 260 dequeued", res, err)
	}
	if n := len(agents(tb)); n != 0 {
		t.Fatalf("%d queued after keep, want 0", n)
	}
	// A rename does not bring it back, nor does a reload of the rules.
	tb.SetRules(DefaultRules, nil)
	if n := len(agents(tb)); n != 0 {
		t.Fatalf("%d queued after a rules reload, want 0", n)
	}
	// The keep survives a restart: the state names it.
	var kept bool
	for _, l := range tb.LeaseState() {
		kept = kept || (l.PID == 200 && l.Keep == LeaseKeep)
	}
	if !kept {
		t.Error("keep not in the lease state")
	}
	// Its session's leftovers stay: the agent exits, nothing is queued.
	if lo := agentExit(tb); len(lo) != 0 {
		t.Errorf("leftovers of a kept agent queued: %v", lo)
	}
	// unkeep of the nested agent: queued again at its max age, and it is a
	// leftover root now that its agent exited.
	if _, err := tb.Unkeep(260, Start{}); err != nil {
		t.Fatal(err)
	}
	if a, ok := agents(tb)[260]; !ok || (a.Reason != ReasonLeftover && a.Reason != ReasonMaxAge) {
		t.Errorf("unkept nested agent: %+v %v", a, ok)
	}
}

func TestKillNow(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 100, 300, 3_000, "vim") // not a member
	allow := func(pid int32, kthread bool) bool { return pid != 100 }
	res, err := tb.KillNow(210, Start{}, false, "uid 0 pid 7", allow)
	if err != nil || len(res.Queued) != 1 || res.Queued[0] != 200 {
		t.Fatalf("kill a member: %+v %v; want its agent queued", res, err)
	}
	a := agents(tb)[200]
	if a.Reason != ReasonManual || a.Deadline != clock.now || a.RequestedBy != "uid 0 pid 7" {
		t.Fatalf("agent after kill: %+v", a)
	}
	// A reload does not move a manual kill.
	tb.SetMaxAge(10 * time.Hour)
	if d := agents(tb)[200].Deadline; d != clock.now {
		t.Errorf("manual deadline moved by a reload to %d", d)
	}
	// Neither agent nor member: refused without force; protected: refused.
	if _, err := tb.KillNow(300, Start{}, false, "x", allow); !errors.Is(err, ErrNotAgent) {
		t.Errorf("kill a non-agent without force: %v", err)
	}
	if _, err := tb.KillNow(100, Start{}, true, "x", allow); err == nil {
		t.Error("kill of a protected process accepted")
	}
	res, err = tb.KillNow(300, Start{}, true, "x", allow)
	if a := agents(tb)[300]; err != nil || a.Reason != ReasonManual || a.Session.PID != 0 {
		t.Errorf("kill --force: %+v %v; queued %+v", res, err, a)
	}
	// A session whose agent exited: its leftovers are killed now.
	spawn(tb, procs, 100, 400, 4_000, "claude")
	spawn(tb, procs, 400, 410, 4_100, "node")
	tb.Apply(exitEv(400, 400, 5_000))
	if _, ok := leftovers(tb)[410]; !ok {
		t.Fatal("410 not a leftover")
	}
	if _, err := tb.KillNow(410, Start{}, false, "y", nil); err != nil {
		t.Fatal(err)
	}
	if a := agents(tb)[410]; a.Reason != ReasonManual || a.Deadline != clock.now || a.RequestedBy != "y" {
		t.Errorf("leftover after kill: %+v", a)
	}
	if st := tb.Stats(); st.Leftovers != 0 {
		t.Errorf("leftover count %d after retargeting to manual", st.Leftovers)
	}
}
