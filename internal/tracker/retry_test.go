package tracker

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		32 * time.Second, time.Minute, time.Minute, time.Minute}
	for i, w := range want {
		if got := RetryDelay(i + 1); got != w {
			t.Errorf("RetryDelay(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := RetryDelay(1 << 20); got != time.Minute {
		t.Errorf("RetryDelay(huge) = %s, want the 1 min cap", got)
	}
}

func target(t *testing.T, tb *Table, pid int32) Target {
	t.Helper()
	p, ok := tb.Lookup(pid)
	if !ok {
		t.Fatalf("pid %d not in the table", pid)
	}
	return Target{PID: pid, Start: p.Start, Comm: p.Comm}
}

// popOne fires the queue at now and wants exactly pid.
func popOne(t *testing.T, tb *Table, now int64, pid int32) *Agent {
	t.Helper()
	due := tb.Queue().PopDue(now, nil)
	if len(due) != 1 || due[0].PID != pid {
		t.Fatalf("due at %d: %v, want only %d (queue %+v)", now, due, pid, tb.Queue().Snapshot())
	}
	return due[0]
}

// A process whose kill keeps failing is retried 1, 2, 4, ... s after each
// failure, at most a minute apart, for as long as it lives, with the first
// kill's reason, session and deadline; nothing it does to itself stops
// that, and its exit does.
func TestRetryBackoffSchedule(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	first := agents(tb)[200]
	sid, _ := tb.SessionOf(200)
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i, w := range want {
		n := i + 1
		clock.now += int64(3 * time.Second) // the attempt took a while: backoff counts from its end
		queued, at := tb.Retry(fired, []Target{target(t, tb, 200)})
		tb.Release(fired.Proc())
		if len(queued) != 1 || queued[0] != 200 || at != clock.now+int64(w*time.Second) {
			t.Fatalf("attempt %d: queued %v at +%s, want 200 at +%ds", n, queued, time.Duration(at-clock.now), w)
		}
		a, ok := agents(tb)[200]
		if !ok || a.Attempt != n || a.FirstDeadline != first.Deadline || a.Deadline != at || a.Reason != ReasonMaxAge ||
			a.Session != sid {
			t.Fatalf("attempt %d: queued %+v, want attempt %d due %d, first deadline %d, max_age in session %v",
				n, a, n, at, first.Deadline, sid)
		}
		if got := tb.Queue().Retrying(); got != 1 {
			t.Fatalf("Retrying() = %d, want 1", got)
		}
		if k, _ := killingOf(tb, sid); !k {
			t.Fatal("session not being killed while its agent's kill is retried")
		}
		if n == 2 {
			// A rename, an exec into something no rule matches, a reload
			// of max age: the retry stands.
			tb.Apply(commEv(200, 200, "innocent"))
			procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(500), Comm: "bash", State: 'S'}
			tb.Apply(execEv(200))
			tb.SetMaxAge(10 * age)
			if b, ok := agents(tb)[200]; !ok || b.Deadline != at || b.Attempt != n {
				t.Fatalf("after rename, exec and reload: %+v (ok %v), want the retry due %d", b, ok, at)
			}
			if _, err := tb.Extend(200, Start{}, time.Hour); err == nil {
				t.Fatal("extend of a process being retried succeeded")
			}
		}
		if due := tb.Queue().PopDue(at-1, nil); len(due) != 0 {
			t.Fatalf("attempt %d fired early: %v", n, due)
		}
		clock.now = at
		fired = popOne(t, tb, at, 200)
	}
	// It exits during the last attempt: nothing is queued again.
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	if queued, _ := tb.Retry(fired, []Target{{PID: 200, Start: first.Start}}); len(queued) != 0 {
		t.Fatalf("retry of an exited process queued %v", queued)
	}
	tb.Release(fired.Proc())
	if q := tb.Queue().Snapshot(); len(q) != 0 || tb.Queue().Retrying() != 0 {
		t.Fatalf("queue after the exit: %+v", q)
	}
}

// The agent died but members of its tree survived: each is retried as a
// kill root (one below another is left to its tree kill), with the same
// reason and session. One that exits before its retry fires leaves what
// lives below it to be retried in its place, at the same time.
func TestRetryMembersOfDeadAgent(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 210, 220, 2_100, "sleep")
	spawn(tb, procs, 200, 230, 2_200, "sleep")
	sid, _ := tb.SessionOf(200)
	first := agents(tb)[200]
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	alive := []Target{target(t, tb, 210), target(t, tb, 220), target(t, tb, 230)}
	tb.Apply(exitEv(230, 230, uint64(clock.now-offset))) // exits before the retry is queued
	queued, at := tb.Retry(fired, alive)
	tb.Release(fired.Proc())
	if len(queued) != 1 || queued[0] != 210 || at != clock.now+int64(time.Second) {
		t.Fatalf("queued %v at %d; want 210 (220 is below it, 230 exited) at +1s", queued, at)
	}
	a := agents(tb)[210]
	if a.Reason != ReasonMaxAge || a.Session != sid || a.Attempt != 1 || a.FirstDeadline != first.Deadline {
		t.Fatalf("210 queued as %+v", a)
	}
	if len(leftovers(tb)) != 0 {
		t.Fatalf("members of a tree being killed queued as leftovers: %+v", leftovers(tb))
	}
	tb.Apply(exitEv(210, 210, uint64(clock.now-offset+1_000)))
	b, ok := agents(tb)[220]
	if !ok || b.Deadline != at || b.Attempt != 1 || b.Reason != ReasonMaxAge || b.FirstDeadline != first.Deadline {
		t.Fatalf("after 210's exit: %+v (ok %v); want 220 retried in its place at %d", b, ok, at)
	}
	if len(tb.Queue().Snapshot()) != 1 {
		t.Fatalf("queue %+v", tb.Queue().Snapshot())
	}
}

// An operator's kill of a process being retried takes effect now (a new
// manual kill), not "already being killed"; a keep takes the retry back.
func TestRetryKillNowAndKeep(t *testing.T) {
	tb, _, clock := sessionTable(t)
	first := agents(tb)[200]
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Retry(fired, []Target{target(t, tb, 200)})
	tb.Release(fired.Proc())

	res, err := tb.KillNow(200, Start{}, false, "uid 0 pid 1", nil)
	if err != nil || len(res.Queued) != 1 || len(res.Busy) != 0 {
		t.Fatalf("KillNow of a retrying agent: %+v, %v; want it queued now", res, err)
	}
	a := agents(tb)[200]
	if a.Reason != ReasonManual || a.Deadline != clock.now || a.Attempt != 0 || a.FirstDeadline != 0 || a.RequestedBy != "uid 0 pid 1" {
		t.Fatalf("after KillNow: %+v, want a manual kill due now", a)
	}
	// It fails too: retried as a manual kill.
	fired = popOne(t, tb, clock.now, 200)
	tb.Retry(fired, []Target{target(t, tb, 200)})
	tb.Release(fired.Proc())
	if a := agents(tb)[200]; a.Reason != ReasonManual || a.Attempt != 1 || a.FirstDeadline != clock.now {
		t.Fatalf("retry of the manual kill: %+v", a)
	}
	if res, err := tb.Keep(200, Start{}); err != nil || len(res.Dequeued) != 1 {
		t.Fatalf("Keep of a retrying process: %+v, %v", res, err)
	}
	if q := tb.Queue().Snapshot(); len(q) != 0 {
		t.Fatalf("queue after keep: %+v", q)
	}
	sid, _ := tb.SessionOf(200)
	if k, _ := killingOf(tb, sid); k {
		t.Fatal("session still being killed after the keep took the retry back")
	}
}

// A dry run fails nothing and retries nothing; a session whose kill is
// retried is not queued again by a policy.
func TestRetryDryRunAndPolicies(t *testing.T) {
	procs := newFakeProcs()
	procs.stat[100] = ProcInfo{PID: 100, PPID: 1, Start: FromTicks(5), Comm: "claude", State: 'S'}
	clock := &fakeClock{now: offset}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock, DryRun: true})
	tb.Merge(must(procs.Scan()), false)
	a := agents(tb)[100]
	fired := popOne(t, tb, a.Deadline, 100)
	if queued, _ := tb.Retry(fired, []Target{target(t, tb, 100)}); len(queued) != 0 {
		t.Fatalf("dry run retried %v", queued)
	}

	tb2, _, clock2 := sessionTable(t)
	sid, _ := tb2.SessionOf(200)
	first := agents(tb2)[200]
	clock2.now = first.Deadline
	fired = popOne(t, tb2, clock2.now, 200)
	tb2.Retry(fired, []Target{target(t, tb2, 200)})
	tb2.Release(fired.Proc())
	if _, err := tb2.KillSession(sid, ReasonMemory, Figures{Procs: 1}); !errors.Is(err, ErrKilling) {
		t.Fatalf("KillSession of a session being retried: %v, want ErrKilling", err)
	}
	if a := agents(tb2)[200]; a.Reason != ReasonMaxAge || a.Attempt != 1 {
		t.Fatalf("retry changed by a policy: %+v", a)
	}
}

// spawnLate is spawn for a fork at ts (monotonic ns) that /proc shows
// starting in the same tick; without comm, the child is a fork copy.
func spawnLate(tb *Table, procs *fakeProcs, parent, child int32, ts uint64, comm string) {
	ticks := uint64((int64(ts) + offset) / Tick)
	procs.stat[child] = ProcInfo{PID: child, PPID: parent, Start: FromTicks(ticks), Comm: procs.stat[parent].Comm, State: 'S'}
	tb.Apply(fork(parent, child, ts))
	if comm != "" {
		info := procs.stat[child]
		info.Comm = comm
		procs.stat[child] = info
		tb.Apply(execEv(child))
	}
}

// A fork copy of the agent (a worker that has not yet exec'd or renamed)
// inside a kill is never unqueued by its own first rename: not while its
// session's kill is in flight, and not once it is the retry of a kill that
// failed.
func TestRetryForkCopyRenameKeepsRetry(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	// Forked 2 s after the agent: its own max age comes after the retry.
	spawnLate(tb, procs, 200, 210, uint64(2*time.Second), "")
	spawnLate(tb, procs, 200, 220, uint64(2*time.Second)+1_000, "")
	if _, ok := agents(tb)[210]; !ok {
		t.Fatal("the fork copy is not queued")
	}
	first := agents(tb)[200]
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200) // the reaper holds the agent: its session is being killed

	rename := func(pid int32, name string) {
		ev := commEv(pid, pid, name)
		ev.Timestamp = uint64(clock.now - offset)
		tb.Apply(ev)
		if p, _ := tb.Lookup(pid); p.Comm != name {
			t.Fatalf("%d: the rename was not applied: %q", pid, p.Comm)
		}
	}
	before := agents(tb)[220]
	rename(220, "worker")
	if a, ok := agents(tb)[220]; !ok || a.Seq != before.Seq {
		t.Fatalf("a fork copy renamed while its session's kill is in flight left the queue: %+v %v", a, ok)
	}

	// The agent dies, its fork copies survive: they are retried.
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	queued, at := tb.Retry(fired, []Target{target(t, tb, 210), target(t, tb, 220)})
	tb.Release(fired.Proc())
	if len(queued) != 2 {
		t.Fatalf("queued %v, want 210 and 220", queued)
	}
	rename(210, "worker")
	procs.stat[220] = ProcInfo{PID: 220, PPID: 200, Start: FromTicks(700), Comm: "git", State: 'S'}
	tb.Apply(execEv(220))
	for _, pid := range []int32{210, 220} {
		a, ok := agents(tb)[pid]
		if !ok || a.Attempt != 1 || a.Deadline != at || a.FirstDeadline != first.Deadline {
			t.Errorf("%d: the retry after its rename or exec: %+v %v, want attempt 1 due %d", pid, a, ok, at)
		}
	}
}

// A reload that changes the rules keeps the retries of a failed kill,
// whatever the retried processes were matched as: the kill was decided
// under the rules of its time. Dissolving a session never takes a retry
// back either.
func TestRetryKeptByReload(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	// Forked 2 s after the agent: their own max age comes after the retry.
	spawnLate(tb, procs, 200, 210, uint64(2*time.Second), "sleep")
	spawnLate(tb, procs, 200, 260, uint64(2*time.Second)+1_000, "claude") // a nested agent
	first := agents(tb)[200]
	sid := first.Session
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	queued, at := tb.Retry(fired, []Target{target(t, tb, 210), target(t, tb, 260)})
	tb.Release(fired.Proc())
	if len(queued) != 2 {
		t.Fatalf("queued %v, want 210 and 260", queued)
	}
	check := func(what string) {
		t.Helper()
		for _, pid := range []int32{210, 260} {
			a, ok := agents(tb)[pid]
			if !ok || a.Attempt != 1 || a.Deadline != at || a.Reason != ReasonMaxAge || a.Session != sid {
				t.Errorf("%s: %d: %+v %v, want the retry (attempt 1, due %d, session %v)", what, pid, a, ok, at, sid)
			}
		}
	}
	check("before the reload")
	tb.SetRules([]Rule{must(ParseRule("claude*"))}, nil) // the rule replaced: 260 would match claude*
	check("rule replaced")
	tb.SetRules([]Rule{must(ParseRule("npm*:agent"))}, nil) // the rule dropped
	check("rule dropped")
	tb.mu.Lock()
	s := tb.sessions[sid]
	if s != nil {
		tb.dissolveLocked(s, "test", nil)
	}
	tb.mu.Unlock()
	check("session dissolved")

	// The agent's own retry survives its session's dissolution.
	tb2, _, clock2 := sessionTable(t)
	first = agents(tb2)[200]
	clock2.now = first.Deadline
	fired = popOne(t, tb2, clock2.now, 200)
	tb2.Retry(fired, []Target{target(t, tb2, 200)})
	tb2.Release(fired.Proc())
	tb2.mu.Lock()
	tb2.dissolveLocked(tb2.sessions[first.Session], "test", nil)
	tb2.mu.Unlock()
	if a, ok := agents(tb2)[200]; !ok || a.Attempt != 1 {
		t.Errorf("the agent's retry after its session was dissolved: %+v %v", a, ok)
	}
}

// A survivor of a failed kill already queued for something due before the
// retry (a nested agent's own max age) becomes the retry all the same, due
// at the earlier of the two: then it is no nested agent a rename or a
// reload could take off the queue.
func TestRetryTakesEarlierEntry(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 260, 1_500, "claude") // its max age comes 500 ns after the agent's
	first := agents(tb)[200]
	own := agents(tb)[260].Deadline
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	queued, at := tb.Retry(fired, []Target{target(t, tb, 260)})
	tb.Release(fired.Proc())
	if own >= at {
		t.Fatalf("own deadline %d not before the retry %d", own, at)
	}
	a, ok := agents(tb)[260]
	if len(queued) != 1 || queued[0] != 260 || !ok || a.Attempt != 1 || a.FirstDeadline != first.Deadline ||
		a.Deadline != own || a.Reason != ReasonMaxAge || a.Session != first.Session {
		t.Fatalf("queued %v, 260: %+v %v; want the retry (attempt 1, first deadline %d) due at its own deadline %d",
			queued, a, ok, first.Deadline, own)
	}
	if n := tb.Queue().Retrying(); n != 1 {
		t.Errorf("Retrying() = %d, want 1", n)
	}
	tb.SetRules([]Rule{must(ParseRule("npm*:agent"))}, nil)
	if _, ok := agents(tb)[260]; !ok {
		t.Error("a reload took the retry back")
	}
}

// A survivor whose pidfd cannot be opened now (EMFILE) is retried all
// the same, without one: the reaper pins it when it is due. Only a
// process that is gone (or whose PID another holds) is not queued.
func TestRetryPinFailure(t *testing.T) {
	procs := newFakeProcs()
	clock := &fakeClock{now: offset + 1_000}
	var pinErr error
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock, Leftovers: true, LeftoverGrace: grace,
		Pin: func(pid int32, s Start) (int, error) { return -1, pinErr }})
	procs.stat[100] = shell
	tb.Merge(must(procs.Scan()), false)
	forkClaude(tb, procs.stat, 200, 1_000)
	tb.Apply(execEv(200))
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 200, 220, 3_000, "sleep")
	first := agents(tb)[200]
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Apply(exitEv(200, 200, uint64(clock.now-offset)))
	errs := tb.Stats().ProcErrs
	pinErr = errEMFILE
	queued, at := tb.Retry(fired, []Target{target(t, tb, 210)})
	if a, ok := agents(tb)[210]; len(queued) != 1 || !ok || a.FD != -1 || a.Attempt != 1 || a.Deadline != at {
		t.Fatalf("pin failed with EMFILE: queued %v, 210: %+v %v; want the retry without a pidfd", queued, a, ok)
	}
	if got := tb.Stats().ProcErrs; got != errs+1 {
		t.Errorf("pin failure not counted: ProcErrs %d, was %d", got, errs)
	}
	pinErr = fmt.Errorf("pid 220: %w", ErrGone)
	if queued, _ := tb.Retry(fired, []Target{target(t, tb, 220)}); len(queued) != 0 {
		t.Errorf("a gone process was retried: %v", queued)
	}
	tb.Release(fired.Proc())
}

// Stats never counts a queued retry as an agent (the queue's Retrying
// counts it), whatever its reason; a retried leftover stays a leftover.
func TestRetryNotCountedAsAgent(t *testing.T) {
	tb, procs, clock := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	spawn(tb, procs, 100, 300, 3_000, "claude") // another agent, in a session of its own
	if st := tb.Stats(); st.Agents != 2 || st.Leftovers != 0 {
		t.Fatalf("before: %+v, want 2 agents", st)
	}
	first := agents(tb)[200]
	clock.now = first.Deadline
	fired := popOne(t, tb, clock.now, 200)
	tb.Retry(fired, []Target{target(t, tb, 200)})
	tb.Release(fired.Proc())
	if st, n := tb.Stats(), tb.Queue().Retrying(); st.Agents != 1 || st.Leftovers != 0 || n != 1 {
		t.Fatalf("the agent's kill retried: %+v, retrying %d; want 1 agent (300), 1 retry", st, n)
	}
	// A leftover's kill fails: retried with the reason leftover, counted
	// among the leftovers and the retries, not the agents.
	tb2, procs2, clock2 := sessionTable(t)
	spawn(tb2, procs2, 200, 210, 2_000, "sleep")
	tb2.Apply(exitEv(200, 200, 10_000))
	lo := leftovers(tb2)[210]
	clock2.now = lo.Deadline
	fired = popOne(t, tb2, clock2.now, 210)
	tb2.Retry(fired, []Target{target(t, tb2, 210)})
	tb2.Release(fired.Proc())
	if st, n := tb2.Stats(), tb2.Queue().Retrying(); st.Agents != 0 || st.Leftovers != 1 || n != 1 {
		t.Fatalf("a leftover's kill retried: %+v, retrying %d; want 0 agents, the retry counted once", st, n)
	}
}
