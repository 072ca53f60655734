package e2e

import (
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/statefile"
	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Hostile agents, part one: nothing an agent does to itself — a rename, an
// exec of another program — switches its supervision off; only root's
// rules do, and when they change, sessions follow (a session whose agent
// no longer matches is dissolved: its members are nobody's leftovers).
//
// The self-renaming and self-exec'ing agent is the fake agent (-on-usr1),
// under a symlink named as the agent rule.
// Every daemon is scoped with --under this test process (startDaemon) and
// its agent rules name only comms made up for the test.

// startSticky runs the fake agent under the name comm, to rename itself
// or exec another program on SIGUSR1 as action says (-on-usr1), and waits
// until it is ready for the signal.
func startSticky(t *testing.T, comm, action string, args ...string) *agent {
	t.Helper()
	a := startAgent(t, comm, append([]string{"-on-usr1", action, "--"}, args...)...)
	a.waitLine(t, "ready", 20*time.Second)
	return a
}

// sameTime: two wall-clock renderings of one boottime instant (/agents
// converts each answer with one reading of both clocks, so two answers
// differ by the clocks' drift between them and the reading's width).
func sameTime(a, b time.Time) bool { return a.Sub(b).Abs() < 10*time.Millisecond }

// tracksAfter starts a sentinel agent (the fake agent under the name comm)
// and waits until the daemon tracks it. The kernel reports events in the
// order they happen and the daemon applies them in that order, so by then
// it has applied everything the test saw happen before (a rename, an exec,
// a child's fork).
func tracksAfter(t *testing.T, d *testDaemon, comm string, args ...string) *agent {
	t.Helper()
	s := startAgent(t, comm, args...)
	d.waitTracked(t, s.pid)
	return s
}

// selfChange runs an agent that changes itself on SIGUSR1 (-on-usr1
// action, with args) under a daemon whose rules name it (and a sentinel),
// waits until changed says it did, and checks that it kept its deadline and
// rule. Then a reload brings max age down to 2 s, rules unchanged: the
// deadline is its start + 2 s, past already; the change changed nothing.
// It returns the agent and its kill line, checked as a kill at that age.
func selfChange(t *testing.T, action string, args []string, changed func(a *agent)) (*agent, map[string]any) {
	t.Helper()
	comm, sentinel := testutil.RandName("sc"), testutil.RandName("ss")
	conf := newConf(t, "REAPER_MAX_AGE=1h", "REAPER_AGENTS="+comm+","+sentinel)
	d := startDaemon(t, "--config", conf, "--kill-grace", "1s")
	a := startSticky(t, comm, action, args...)
	before := d.waitTracked(t, a.pid)
	a.cmd.Process.Signal(syscall.SIGUSR1)
	changed(a)
	tracksAfter(t, d, sentinel)
	as := d.agentsFor(t, a.pid)
	if len(as) != 1 || as[0].Reason != "max_age" || !sameTime(as[0].Deadline, before.Deadline) || as[0].Rule != comm {
		t.Fatalf("after %s: %+v, want its deadline %v by rule %s", action, as, before.Deadline, comm)
	}
	const newAge = 2 * time.Second
	writeConf(t, conf, "REAPER_MAX_AGE="+newAge.String(), "REAPER_AGENTS="+comm+","+sentinel)
	d.reload(t)
	m := d.waitLog(t, 30*time.Second, killOf(a.pid))
	a.waitExit(t, 20*time.Second)
	checkKill(t, m, a, newAge)
	if m["reason"] != "max_age" || m["rule"] != comm {
		t.Errorf("kill line %v, want reason max_age by rule %s", m, comm)
	}
	return a, m
}

// An agent that renames itself (prctl PR_SET_NAME, as Node's
// process.title does) to a name no rule matches, after the daemon tracks
// it, keeps its deadline: it is killed at its start + max age.
func TestIntegrationHostileRename(t *testing.T) {
	if ranApart(t) {
		return
	}
	selfChange(t, "rename=node", nil, func(a *agent) {
		a.waitLine(t, "renamed", 20*time.Second)
		if c := procComm(a.pid); c != "node" {
			t.Fatalf("the agent's comm is %q after its rename, want node", c)
		}
	})
}

// An agent that execs another program no rule matches (a shell exec'ing
// its last command: sh, then sleep) keeps its deadline.
func TestIntegrationHostileExec(t *testing.T) {
	if ranApart(t) {
		return
	}
	a, _ := selfChange(t, "exec", []string{"sh", "-c", "echo execd; exec sleep 3600"}, func(a *agent) {
		a.waitLine(t, "execd", 20*time.Second)
		// The shell's own exec of sleep follows its echo: wait until
		// /proc shows it done.
		waitFor(t, 30*time.Second, func() bool {
			if !a.alive() {
				t.Fatal("the agent died before it became sleep")
			}
			return procComm(a.pid) == "sleep"
		}, "the agent becoming sleep")
	})
	if ws := a.state.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the agent (sleep by then) ended with %v, want SIGTERM", ws)
	}
}

// noLeftoverKill asserts that none of the pids was queued or killed as a
// leftover, nor signalled, once the sentinel's leftover — queued later than
// theirs would have been, on the same timer — has been killed.
func noLeftoverKill(t *testing.T, d *testDaemon, r rig, pids, fds map[string]int) {
	t.Helper()
	for l, pid := range pids {
		d.noLogs(t, leftoverOrKillOf(pid), "%s (%d), a member of a dissolved session, treated as a leftover", l, pid)
		if pidfdDead(fds[l], 0) {
			t.Errorf("%s (%d), a member of a dissolved session, died", l, pid)
		}
		if _, ok := r.termAt(l + ".term"); ok {
			t.Errorf("%s (%d), a member of a dissolved session, got SIGTERM", l, pid)
		}
	}
}

// sentinelLeftover makes the sentinel agent s exit and waits for the kill
// of its leftover child (label bkid): its kill time is its agent's exit +
// the grace, after that of any leftover of an agent that exited before.
func sentinelLeftover(t *testing.T, d *testDaemon, r rig, s *agent, exitFile string) {
	t.Helper()
	spids, _ := s.children(t, "bkid")
	r.trigger(t, exitFile)
	s.waitExit(t, 20*time.Second)
	d.waitLog(t, 60*time.Second, leftoverOf(spids["bkid"]))
	d.waitLog(t, 60*time.Second, leftoverKillOf(spids["bkid"]))
}

// A reload that drops an agent's rule dissolves its session: the agent
// loses its deadline, and when it exits its child is no leftover.
func TestIntegrationHostileReloadDropsRule(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm, sentinel := testutil.RandName("sd"), testutil.RandName("ss")
	conf := newConf(t, "REAPER_MAX_AGE=1h", "REAPER_AGENTS="+comm+","+sentinel)
	d := startDaemon(t, "--config", conf, "--kill-grace", leftKillGrace.String(), "--leftover-grace", "1s")
	a := startAgent(t, comm, "-exit-file", r.path("exit"), "-spawn", "label=kid,term="+r.path("kid.term"))
	pids, fds := a.children(t, "kid")
	d.waitTracked(t, a.pid)
	s := tracksAfter(t, d, sentinel, "-exit-file", r.path("sexit"), "-spawn", "label=bkid")
	if as := d.agentsFor(t, a.pid); len(as) != 1 || as[0].Members != 2 {
		t.Fatalf("before the reload: %+v, want the agent heading a session of 2 (it and its child)", as)
	}

	writeConf(t, conf, "REAPER_MAX_AGE=1h", "REAPER_AGENTS="+sentinel)
	d.reload(t)
	d.waitLog(t, 30*time.Second, dissolvedOf(a.pid, "reload"))
	if as := d.agentsFor(t, a.pid); len(as) != 0 {
		t.Fatalf("after its rule was dropped: %+v, want no deadline", as)
	}
	r.trigger(t, "exit")
	a.waitExit(t, 20*time.Second)
	sentinelLeftover(t, d, r, s, "sexit")
	noLeftoverKill(t, d, r, pids, fds)
	d.noLogs(t, killOf(a.pid), "the agent whose rule was dropped was killed")
}

// A restart under a configuration without the agents' rule dissolves
// their persisted sessions, that of a live agent and that of one that
// exited while no daemon ran: no member is ever a leftover.
func TestIntegrationHostileRestartDropsRule(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm, sentinel := testutil.RandName("sr"), testutil.RandName("ss")
	state := t.TempDir()
	conf := newConf(t, "REAPER_MAX_AGE=1h", "REAPER_AGENTS="+comm+","+sentinel)
	args := []string{"--config", conf, "--state-dir", state, "--kill-grace", leftKillGrace.String(), "--leftover-grace", "1s"}
	d1 := startDaemon(t, args...)
	live := startAgent(t, comm, "-exit-file", r.path("exit"), "-spawn", "label=kid,term="+r.path("kid.term"))
	gone := startAgent(t, comm, "-exit-file", r.path("gone-exit"), "-spawn", "label=kid2,term="+r.path("kid2.term"))
	pids, fds := live.children(t, "kid")
	pids2, fds2 := gone.children(t, "kid2")
	pids["kid2"], fds["kid2"] = pids2["kid2"], fds2["kid2"]
	d1.waitTracked(t, live.pid)
	d1.waitTracked(t, gone.pid)
	s0 := tracksAfter(t, d1, sentinel) // the children's forks are applied
	d1.stop(t)                         // persists the sessions
	var saved []tracker.MemberState
	if err := statefile.Load(filepath.Join(state, "sessions.json"), &saved); err != nil {
		t.Fatal(err)
	}
	for l, pid := range pids {
		if !slices.ContainsFunc(saved, func(m tracker.MemberState) bool { return int(m.PID) == pid && m.Session.PID != int32(s0.pid) }) {
			t.Fatalf("sessions.json does not name %s (%d) a member: %+v", l, pid, saved)
		}
	}
	r.trigger(t, "gone-exit") // exits while no daemon runs
	gone.waitExit(t, 20*time.Second)

	writeConf(t, conf, "REAPER_MAX_AGE=1h", "REAPER_AGENTS="+sentinel)
	d2 := startDaemon(t, args...)
	d2.waitLog(t, 30*time.Second, dissolvedOf(live.pid, "restart"))
	d2.waitLog(t, 30*time.Second, dissolvedOf(gone.pid, "restart"))
	if as := d2.agentsFor(t, live.pid); len(as) != 0 {
		t.Fatalf("after a restart without its rule: %+v, want no deadline", as)
	}
	s := tracksAfter(t, d2, sentinel, "-exit-file", r.path("sexit"), "-spawn", "label=bkid")
	r.trigger(t, "exit")
	live.waitExit(t, 20*time.Second)
	sentinelLeftover(t, d2, r, s, "sexit")
	noLeftoverKill(t, d2, r, pids, fds)
}
