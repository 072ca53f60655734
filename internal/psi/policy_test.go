package psi

import (
	"errors"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type fakeClock struct{ now int64 }

func (c *fakeClock) Now() int64              { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now += int64(d) }

type fakeSessions struct{ list []Candidate }

func (f *fakeSessions) Candidates() []Candidate { return f.list }

type kill struct {
	c Candidate
	p Pressure
}

type fakeKiller struct {
	kills []kill
	fail  map[int32]error // by session PID
}

func (k *fakeKiller) KillForPressure(c Candidate, p Pressure) error {
	if err := k.fail[c.ID.PID]; err != nil {
		return err
	}
	k.kills = append(k.kills, kill{c, p})
	return nil
}

const mib = 1 << 20

type rig struct {
	clock    *fakeClock
	sessions *fakeSessions
	killer   *fakeKiller
	logs     *observer.ObservedLogs
	policy   *Policy
}

// newRig starts the clock at 1h of boottime with sessions started at the
// given offsets before it.
func newRig(minAge, cooldown time.Duration, cands ...Candidate) *rig {
	r := &rig{clock: &fakeClock{now: int64(time.Hour)}, sessions: &fakeSessions{list: cands}, killer: &fakeKiller{}}
	core, logs := observer.New(zapcore.DebugLevel)
	r.logs = logs
	r.policy = NewPolicy(PolicyConfig{MinAge: minAge, Cooldown: cooldown, Sessions: r.sessions, Killer: r.killer,
		Now: r.clock.Now, Log: zap.New(core), Quiet: time.Minute})
	return r
}

// session is a candidate of pid, age and memory at the rig's start time.
func session(pid int32, age time.Duration, memMiB int64, exempt bool) Candidate {
	return Candidate{ID: tracker.SessionID{PID: pid, Start: tracker.Start{NS: int64(time.Hour - age)}}, Comm: "claude",
		Started: int64(time.Hour - age), MemoryBytes: memMiB * mib, Exempt: exempt}
}

var pressed = Pressure{Some: Line{Avg10: 8.6}, Full: Line{Avg10: 1.3}, HasFull: true}

func TestPolicyLargestFirstThenCooldown(t *testing.T) {
	r := newRig(time.Minute, 10*time.Second,
		session(10, 5*time.Minute, 300, false),
		session(11, 5*time.Minute, 150, false),
		session(12, 5*time.Minute, 500, true),   // exempt, however large
		session(13, 30*time.Second, 900, false), // too young
	)
	d := r.policy.Trigger(pressed)
	if d.Outcome != Killed || d.Victim.ID.PID != 10 {
		t.Fatalf("first trigger: %v; want session 10 killed", d)
	}
	if len(r.killer.kills) != 1 || r.killer.kills[0].p != pressed {
		t.Fatalf("kills = %+v", r.killer.kills)
	}
	// Within the cooldown: counted, nothing killed, even as the victim
	// still shows in the sample.
	for i := 0; i < 3; i++ {
		r.clock.advance(3 * time.Second)
		if d := r.policy.Trigger(pressed); d.Outcome != Cooling || d.Wait != time.Duration(10-3*(i+1))*time.Second {
			t.Fatalf("trigger %d in the cooldown: %v", i, d)
		}
	}
	if len(r.killer.kills) != 1 {
		t.Fatalf("killed during the cooldown: %+v", r.killer.kills)
	}
	// The cooldown is over at exactly lastKill + cooldown. The previous
	// victim, still sampled (dying, or alive in dry-run), is not chosen
	// again; the young one (40s) is still too young.
	r.clock.advance(time.Second)
	d = r.policy.Trigger(pressed)
	if d.Outcome != Killed || d.Victim.ID.PID != 11 {
		t.Fatalf("after the cooldown: %v; want session 11", d)
	}
	// Twenty seconds later the young one is a minute old: now it goes.
	r.clock.advance(20 * time.Second)
	if d := r.policy.Trigger(pressed); d.Outcome != Killed || d.Victim.ID.PID != 13 {
		t.Fatalf("once old enough: %v; want session 13", d)
	}
	// Only the exempt one is left.
	r.clock.advance(time.Minute)
	if d := r.policy.Trigger(pressed); d.Outcome != NoCandidate {
		t.Fatalf("with only the exempt session left: %v", d)
	}
	for _, k := range r.killer.kills {
		if k.c.Exempt {
			t.Fatalf("exempt session killed: %+v", k.c)
		}
	}
	logged := r.logs.FilterMessage("memory pressure: killing the largest session").All()
	if len(logged) != 3 {
		t.Fatalf("kill log lines: %d", len(logged))
	}
	f := logged[0].ContextMap()
	if f["some_avg10"] != 8.6 || f["full_avg10"] != 1.3 || f["memory_bytes"] != int64(300*mib) || f["session_pid"] != int32(10) {
		t.Fatalf("kill log fields: %v", f)
	}
	if f := logged[1].ContextMap(); f["triggers_in_last_cooldown"] != int64(3) {
		t.Fatalf("second kill's count of triggers in the cooldown: %v", f)
	}
}

func TestPolicyNoCandidateRateLimited(t *testing.T) {
	r := newRig(time.Minute, 10*time.Second, session(10, 10*time.Second, 300, false), session(11, time.Hour-time.Second, 900, true))
	for i := 0; i < 30; i++ { // one trigger a second for 30 s
		if d := r.policy.Trigger(pressed); d.Outcome != NoCandidate {
			t.Fatalf("trigger %d: %v", i, d)
		}
		r.clock.advance(time.Second)
	}
	msg := "memory pressure, but no session to kill (none is older than the minimum age and not exempt)"
	if n := r.logs.FilterMessage(msg).Len(); n != 1 {
		t.Fatalf("logged %d times in 30s; want once a minute", n)
	}
	r.clock.advance(30 * time.Second) // the young session is now old enough
	r.sessions.list = r.sessions.list[1:]
	if d := r.policy.Trigger(pressed); d.Outcome != NoCandidate {
		t.Fatalf("only the exempt one: %v", d)
	}
	all := r.logs.FilterMessage(msg).All()
	if len(all) != 2 || all[1].ContextMap()["triggers_since_last_logged"] != int64(30) {
		t.Fatalf("second log line: %+v", all)
	}
	if len(r.killer.kills) != 0 {
		t.Fatalf("killed with no candidate: %+v", r.killer.kills)
	}
}

func TestPolicyKillFailureTriesNext(t *testing.T) {
	r := newRig(0, 10*time.Second, session(10, time.Minute, 300, false), session(11, time.Minute, 150, false))
	r.killer.fail = map[int32]error{10: errors.New("session is exempt")}
	if d := r.policy.Trigger(pressed); d.Outcome != Killed || d.Victim.ID.PID != 11 {
		t.Fatalf("first kill refused: %v; want the next, 11", d)
	}
	// Every kill failing starts no cooldown.
	r2 := newRig(0, 10*time.Second, session(10, time.Minute, 300, false))
	r2.killer.fail = map[int32]error{10: errors.New("gone")}
	if d := r2.policy.Trigger(pressed); d.Outcome != Failed || d.Err == nil {
		t.Fatalf("all failing: %v", d)
	}
	r2.killer.fail = nil
	if d := r2.policy.Trigger(pressed); d.Outcome != Killed {
		t.Fatalf("after a failure, the next trigger: %v; want a kill, no cooldown", d)
	}
}

func TestPolicySetLimits(t *testing.T) {
	r := newRig(time.Hour, time.Minute, session(10, 2*time.Minute, 300, false), session(11, 2*time.Minute, 200, false))
	if d := r.policy.Trigger(pressed); d.Outcome != NoCandidate {
		t.Fatalf("under a 1h minimum age: %v", d)
	}
	r.policy.SetLimits(time.Minute, 5*time.Second)
	if d := r.policy.Trigger(pressed); d.Outcome != Killed || d.Victim.ID.PID != 10 {
		t.Fatalf("after lowering the minimum age: %v", d)
	}
	r.clock.advance(5 * time.Second)
	if d := r.policy.Trigger(pressed); d.Outcome != Killed || d.Victim.ID.PID != 11 {
		t.Fatalf("after the new 5s cooldown: %v", d)
	}
	if a, c := r.policy.Limits(); a != time.Minute || c != 5*time.Second {
		t.Fatalf("Limits = %v, %v", a, c)
	}
}

func TestChooseOrder(t *testing.T) {
	now := int64(time.Hour)
	a := session(30, 2*time.Minute, 100, false)
	b := session(20, 3*time.Minute, 100, false) // same memory, older
	c := session(10, 3*time.Minute, 100, false) // same memory and age, lower PID
	b.Started, c.Started = a.Started-1, a.Started-1
	got := Choose([]Candidate{a, b, c, session(40, 2*time.Minute, 101, false)}, now, time.Minute, nil)
	var pids []int32
	for _, x := range got {
		pids = append(pids, x.ID.PID)
	}
	if len(pids) != 4 || pids[0] != 40 || pids[1] != 10 || pids[2] != 20 || pids[3] != 30 {
		t.Fatalf("order = %v; want 40 (largest), then 10, 20 (older, lower PID), 30", pids)
	}
	// Exactly the minimum age is old enough.
	if got := Choose([]Candidate{session(1, time.Minute, 1, false)}, now, time.Minute, nil); len(got) != 1 {
		t.Fatal("a session exactly the minimum age old was not a candidate")
	}
}

func TestDetails(t *testing.T) {
	d := Details(pressed)
	if len(d) != 2 || d["psi_some_avg10"] != 8.6 || d["psi_full_avg10"] != 1.3 {
		t.Fatalf("Details = %v", d)
	}
}
