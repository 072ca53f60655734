package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// Hostile agents and local users (issue 17), end to end: agents that
// rename or re-exec themselves, mark themselves REAPER_KEEP=1, or cannot
// be signalled; local users against the daemon's endpoints and control
// socket. Each part says what it covers.

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
	for l, pid := range pids {
		if m, ok := savedMember(t, state, pid); !ok || m.Session.PID == int32(s0.pid) {
			t.Fatalf("sessions.json does not name %s (%d) a member: %+v", l, pid, m)
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

// What a process says about itself only delays cleanup after its agent
// ends (issue 17, "Hostile agents"): REAPER_KEEP=1 in an environment spares
// a process and its descendants from leftover kills and from its agent's
// tree kill at max age, nothing else. An agent can set it on itself, so it
// never lifts an agent's max age, and the resource limits and the pressure
// policy count and kill marked processes like any other. Marks cannot be
// laundered by renaming, and a marked parent that exits at once still
// leaves a marked child. Root's word (--keep, a control-socket keep) is
// what exempts.

// TestIntegrationHostileKeepMaxAge: an agent started with REAPER_KEEP=1,
// and one that re-execs itself under it (exec env REAPER_KEEP=1 <agent>),
// are both killed at their max age, and what the re-exec'd agent started
// (its environment, REAPER_KEEP=1 included, inherited) dies with its tree:
// an agent's own mark spares nothing.
func TestIntegrationHostileKeepMaxAge(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hk")[:10]
	d := startDaemon(t, "--agent", comm, "--max-age", maxAge.String(), "--kill-grace", "1s")
	marked := startHolder(t, comm, 1, "REAPER_KEEP=1")
	script := r.script(t, comm, "#!/bin/sh\nexec env REAPER_KEEP=1 "+linkAs(t, "/bin/sh", comm)+
		" -c 'sleep 1000 & echo \"child $! kid\"; wait'\n")
	reexec := startScript(t, script)
	pids, fds := reexec.children(t, "kid")
	for _, a := range []struct {
		a    *agent
		what string
	}{{marked.agent, "started with REAPER_KEEP=1"}, {reexec, "re-exec'd under REAPER_KEEP=1"}} {
		m := d.waitLog(t, maxAge+30*time.Second, killOf(a.a.pid))
		a.a.waitExit(t, 10*time.Second)
		if m["reason"] != "max_age" {
			t.Errorf("agent %s: killed for %v, want max_age", a.what, m["reason"])
		}
		checkKill(t, m, a.a, maxAge)
	}
	if !pidfdDead(fds["kid"], 30*time.Second) {
		t.Errorf("the child (%d) of the agent re-exec'd under REAPER_KEEP=1 survived its tree kill at max age", pids["kid"])
	}
}

// TestIntegrationHostileKeepMemory: a child started with REAPER_KEEP=1
// holding 300 MiB in a session limited to 150 MiB: the session is killed
// for memory, the marked child with it.
//
// The daemon starts once the child holds its memory (its start-up scan
// finds the session): a pidfd on the child is open before anything can
// kill it.
func TestIntegrationHostileKeepMemory(t *testing.T) {
	if ranApart(t) {
		return
	}
	a := startAgent(t, "claude", "-spawn", "label=marked,hold-mb=300,env=REAPER_KEEP=1")
	pids, fds := a.children(t, "marked") // printed once its memory is held
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", "200ms",
		"--session-max-memory", "150MiB")
	over := d.waitLog(t, 60*time.Second, func(m map[string]any) bool {
		return m["msg"] == "session over its limit: killing it" && num(m["session_pid"]) == int64(a.pid)
	})
	if over["reason"] != "memory" || num(over["memory_bytes"]) <= 150<<20 {
		t.Errorf("limit line %v: want reason memory, memory_bytes over 150 MiB (the marked child's counted)", over)
	}
	m := d.waitLog(t, 30*time.Second, killOf(a.pid))
	if m["reason"] != "memory" {
		t.Errorf("agent's kill: reason %v, want memory", m["reason"])
	}
	a.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["marked"], 30*time.Second) {
		t.Errorf("the REAPER_KEEP=1 child (%d) survived its session's memory kill", pids["marked"])
	}
}

// TestIntegrationHostileKeepPressure: under real memory pressure the
// session whose memory is mostly in a REAPER_KEEP=1 child (~300 MiB) is
// the largest and is killed, child included, not the 150 MiB one.
func TestIntegrationHostileKeepPressure(t *testing.T) {
	if ranApartTurn(t, "pressure", needPSI) {
		return
	}
	comm := testutil.RandName("hp")[:10]
	// One kill at most (a 1h cooldown); the minimum age keeps both out of
	// reach of pressure from elsewhere until their figures were sampled.
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", "2s",
		"--pressure", pressureSpec(t), "--pressure-min-age", pressureTestMinAge, "--pressure-cooldown", "1h",
		"--resource-interval", "500ms")
	hider := startAgent(t, comm, "-spawn", "label=marked,hold-mb=300,env=REAPER_KEEP=1")
	pids, fds := hider.children(t, "marked")
	plain := startHolder(t, comm, 150)
	// Sampled: the whole session's memory, however it is split.
	waitSessionMemory(t, d, map[int]int64{hider.pid: 290 << 20, plain.pid: 140 << 20})
	startPressureRig(t)
	kill := d.waitLog(t, 90*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure: killing the largest session"
	})
	if num(kill["session_pid"]) != int64(hider.pid) {
		t.Fatalf("pressure killed session %v (memory_bytes %v); want %d, whose REAPER_KEEP=1 child holds 300 MiB, not the 150 MiB %d",
			kill["session_pid"], kill["memory_bytes"], hider.pid, plain.pid)
	}
	if mem := num(kill["memory_bytes"]); mem < 290<<20 {
		t.Errorf("the kill's memory_bytes %d: want the marked child's 300 MiB counted", mem)
	}
	hider.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["marked"], 30*time.Second) {
		t.Errorf("the REAPER_KEEP=1 child (%d) survived its session's pressure kill", pids["marked"])
	}
	if _, signalled := plain.termAt(); !plain.alive() || signalled {
		t.Error("the 150 MiB session was signalled")
	}
}

// swarmBin builds the swarm helper.
func swarmBin(t testing.TB) string { return buildC(t, "swarm", swarmC) }

// TestIntegrationHostileKeepSwarm: 300 members renaming themselves once a
// second, in a session holding ~104 MiB (in one more member, renaming
// itself too, forked before them) under an 80 MiB limit, at the default
// 2 s sample: the session is killed for memory. Renames decide no keep mark
// again, and a mark not decided counts as not kept, so the memory cannot
// hide. (It did: with 256 marks read a sample, newest members first, and
// the unread ones counted as kept, the holder was never read.)
func TestIntegrationHostileKeepSwarm(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hs")[:10]
	goFifo := r.fifo(t, "go")
	script := r.script(t, comm, fmt.Sprintf("#!/bin/sh\n%s 300 104 %s &\nwait\n", swarmBin(t), goFifo))
	const interval = 2 * time.Second
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", interval.String(),
		"--session-max-memory", "80MiB")
	a := startScript(t, script)
	pids, fds := a.children(t, "holder")
	a.waitLine(t, "renamers", 60*time.Second)
	// Now the memory.
	r.release(t, "go")
	over := d.waitLog(t, 120*time.Second, func(m map[string]any) bool {
		return m["msg"] == "session over its limit: killing it" && num(m["session_pid"]) == int64(a.pid)
	})
	if over["reason"] != "memory" || num(over["memory_bytes"]) <= 80<<20 || num(over["procs"]) < 300 {
		t.Errorf("limit line %v: want reason memory, memory_bytes over 80 MiB, procs over 300", over)
	}
	// Within a few samples of the memory being held: a count of the
	// daemon's intervals (its policy), not a measure of this machine. The
	// holder prints "held" once it touched all its memory; a sample taken
	// while it is still touching can find the session over the limit
	// already, and then the kill comes first and no line does (the output
	// ends with the session).
	if l, ok := a.out.take("held", 60*time.Second); ok {
		held := time.Now().Add(-time.Duration(boottime() - l.at)) // when the line came
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(over["time"]))
		if err != nil {
			t.Fatalf("limit line time %v: %v", over["time"], err)
		}
		if took := at.Sub(held); took > 10*interval {
			t.Errorf("killed %s after the memory was held: want within 10 sample intervals (%s)", took, 10*interval)
		}
	}
	kill := d.waitLog(t, 30*time.Second, killOf(a.pid))
	// Over the limit, so the holder's memory counted (the 300 renamers
	// hold about 14 MiB): all 104 MiB of it if it was done touching, less
	// if the sample came while it still was.
	if num(kill["memory_bytes"]) <= 80<<20 {
		t.Errorf("kill record %v: want memory_bytes over the 80 MiB limit (the holder's memory counted)", kill)
	}
	a.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["holder"], 30*time.Second) {
		t.Errorf("the swarm's memory holder (%d) survived its session's kill", pids["holder"])
	}
}

// TestIntegrationHostileKeepParentExitsFirst: a process started with
// REAPER_KEEP=1 forks a child and exits at once, before anything read its
// mark; the child then execs with the marker removed from its environment
// (as after sudo's reset). When the agent ends, the child is no leftover:
// the mark passed to it at fork. A nested agent started after the marked
// process exited is the sentinel: once it is tracked, the daemon has seen
// the fork; its leftover kill shows the leftovers were dealt with. (It
// prints its own PID once running: a PID read from a process still in
// execve cannot be proven ours, its environment being half laid out.)
func TestIntegrationHostileKeepParentExitsFirst(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hx")[:10]
	sentinel, _ := fakeAgentShell(t, comm)
	goFifo := r.fifo(t, "go")
	marked := r.script(t, "marked.sh", `#!/bin/sh
( read x < "`+goFifo+`"; exec env -u REAPER_KEEP sleep 1000 ) &
echo "child $! kid"
exit 0
`)
	script := r.script(t, comm, `#!/bin/sh
REAPER_KEEP=1 "`+marked+`"
`+sentinel+` -label sentinel &
while [ ! -e "`+r.path("exit")+`" ]; do sleep 0.05; done
`)
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", leftKillGrace.String(),
		"--leftover-grace", leftoverGrace.String())
	a := startScript(t, script)
	pids, fds := a.children(t, "kid", "sentinel")
	d.waitTracked(t, pids["sentinel"])

	// Let the kid exec without the marker, and see that it did.
	r.release(t, "go")
	kid := pids["kid"]
	waitFor(t, 30*time.Second, func() bool {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", kid))
		if pidfdDead(fds["kid"], 0) {
			t.Fatal("the kid died before its agent ended")
		}
		return procComm(kid) == "sleep" && len(env) > 0 && !bytes.Contains(env, []byte("REAPER_KEEP=1"))
	}, "the kid exec'ing sleep without REAPER_KEEP=1")

	leftoverKilled(t, d, r, a, "exit", pids["sentinel"], leftoverGrace, exitSlack)
	if !pidfdDead(fds["sentinel"], 10*time.Second) {
		t.Error("the sentinel survived its leftover kill")
	}
	if pidfdDead(fds["kid"], 0) {
		t.Errorf("the child of a REAPER_KEEP=1 process that exited first (%d) died", kid)
	}
	d.noLogs(t, leftoverOrKillOf(kid), "the child of a REAPER_KEEP=1 process that exited first was treated as a leftover")
}

// TestIntegrationHostileKeepEnvOff: with --keep-env=false, a REAPER_KEEP=1
// child outliving its agent is a leftover like any other, and killed.
func TestIntegrationHostileKeepEnvOff(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", leftoverGrace.String(),
		"--keep-env=false")
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=marked,env=REAPER_KEEP=1,term="+r.path("marked.term"))
	pids, fds := a.children(t, "marked")
	d.waitTracked(t, a.pid)
	leftoverKilled(t, d, r, a, "exit", pids["marked"], leftoverGrace, exitSlack)
	if !pidfdDead(fds["marked"], 10*time.Second) {
		t.Error("the REAPER_KEEP=1 leftover survived with --keep-env=false")
	}
	if _, ok := r.termAt("marked.term"); !ok {
		t.Error("the REAPER_KEEP=1 leftover never got SIGTERM")
	}
}

// No kill is ever given up (issue 17): a process the daemon may not signal
// is retried, 1 s after the failure and then doubling, until it is gone.
//
// As root the daemon may signal anything, so these tests take that away
// for real: the daemon runs without CAP_KILL (dropped from its bounding
// and inheritable sets before exec, so an exec as root gets it back from
// nowhere), and its target runs as nobody. pidfd_send_signal then answers
// EPERM, as for a daemon in a container without CAP_KILL or a process in
// another user namespace. To become killable the target execs a setuid
// root copy of sleep: its saved UID becomes 0, the daemon's UID, and the
// kernel lets the signal through (kill_ok_by_cred) — the next retry kills
// it.

// startDaemonNoKill runs the daemon as startDaemon does, without CAP_KILL
// (through the test binary as a wrapper: modes_test.go), and checks that
// it really has none.
func startDaemonNoKill(t *testing.T, args ...string) *testDaemon {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemonUnder(t, []string{self}, []string{dropCapsEnv + "=kill"}, args...)
	v := procStatus(d.cmd.Process.Pid, "CapEff")
	caps, err := strconv.ParseUint(v, 16, 64)
	if err != nil || caps&(1<<unix.CAP_KILL) != 0 || caps&(1<<unix.CAP_NET_ADMIN) == 0 {
		t.Fatalf("daemon capabilities %q (%v): want CAP_NET_ADMIN and no CAP_KILL", v, err)
	}
	return d
}

// retryBins makes, in a directory nobody can reach, name: a shell (a
// symlink to /bin/sh, so its comm is name) and setuid/name: a setuid root
// copy of sleep, under the same name so that an agent rule matches both.
func retryBins(t *testing.T, names ...string) (dir string) {
	t.Helper()
	dir = publicTempDir(t, "supervisor-retry-")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	body := readFile(t, sleep)
	if err := os.Mkdir(filepath.Join(dir, "setuid"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.Symlink("/bin/sh", filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "setuid", n)
		if err := os.WriteFile(p, body, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, 0o4755); err != nil { // os.Chmod would need os.ModeSetuid
			t.Fatal(err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID != 0 {
		t.Fatalf("%s is on a nosuid mount: the target could never become killable (set TMPDIR elsewhere)", dir)
	}
	return dir
}

// retryingEntry waits until /agents lists pid as retrying (its retry is
// queued between two attempts; an attempt in flight is not listed).
func (d *testDaemon) retryingEntry(t *testing.T, pid int) agentView {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for seen := 1; time.Now().Before(end); seen++ {
		for _, v := range d.agentsFor(t, pid) {
			if v.State == "retrying" {
				return v
			}
		}
		d.waitLogs(t, seen+1, time.Until(end), retryWarn(pid, ""))
	}
	t.Fatalf("pid %d never listed as retrying", pid)
	return agentView{}
}

func retriesMetric(t *testing.T, d *testDaemon, reason string) float64 {
	return metricValue(t, d, `supervisor_kill_retries_total{reason="`+reason+`"}`)
}

// An agent the daemon may not signal (EPERM) outlives its deadline: the
// kill is recorded failed, then retried with backoff — warned, counted,
// listed as retrying, and still killable by an operator ("supervisor kill"
// kills it now, not "already being killed") — until the process can be
// signalled, when the next attempt kills it and the retries stop.
func TestIntegrationRetryEPERMAgent(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 2 * time.Second
	sock := ctlSocket(t)
	d := startDaemonNoKill(t, "--max-age", age.String(), "--kill-grace", "1s", "--agent", "svretry", "--control-socket", sock)
	dir := retryBins(t, "svretry")

	// The agent: a shell as nobody, that execs the setuid sleep when the
	// test writes a line (and exits at EOF).
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wr.Close() })
	cmd := exec.Command(filepath.Join(dir, "svretry"), "-c", `read x && exec "$0" 600`, filepath.Join(dir, "setuid", "svretry"))
	cmd.Stdin = rd
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID}}
	proc := runAgent(t, cmd)
	rd.Close()
	pid := proc.pid

	// The first kill fails, and is not the last.
	failed := d.waitLog(t, age+30*time.Second, killRow(pid, "max_age", "failed"))
	if failed["attempt"] != nil || failed["final_signal"] != "TERM" {
		t.Errorf("first kill: %v", failed)
	}
	deadline := num(failed["deadline_boot_ns"])
	if deadline < num(failed["start_boot_ns"])+int64(age) {
		t.Errorf("deadline %d before start + max age", deadline)
	}
	w := d.waitLog(t, 10*time.Second, retryWarn(pid, "max_age"))
	if num(w["attempt"]) != 0 || num(w["next_attempt"]) != 1 || !strings.Contains(fmt.Sprint(w["error"]), "operation not permitted") {
		t.Errorf("first retry warning: %v", w)
	}
	if rp, _ := w["retry_pids"].([]any); len(rp) != 1 || int(rp[0].(float64)) != pid {
		t.Errorf("retry_pids %v, want [%d]", w["retry_pids"], pid)
	}
	if in, err := time.ParseDuration(fmt.Sprint(w["retry_in"])); err != nil || in > time.Second {
		t.Errorf("retry_in %v (%v): want the first backoff, at most 1 s", w["retry_in"], err)
	}

	v := d.retryingEntry(t, pid)
	if v.Reason != "max_age" || v.Attempt < 1 || v.NextAttempt == nil || v.Deadline.IsZero() {
		t.Errorf("/agents entry %+v: want max_age, an attempt and a next attempt", v)
	}
	if v.NextAttempt != nil && !v.NextAttempt.After(v.Deadline) {
		t.Errorf("next attempt %v not after the first deadline %v", v.NextAttempt, v.Deadline)
	}

	// Two retries queued, counted; the first retry's record keeps the
	// first deadline and reason, and says which attempt it is.
	d.waitLogs(t, 2, 30*time.Second, retryWarn(pid, "max_age"))
	// Counted when the failed attempt is recorded, which may come just
	// after the tracker's warning: wait for the count, bounded.
	waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, "max_age") >= 2 },
		"supervisor_kill_retries_total{reason=max_age} >= 2 after two retries")
	r1 := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return killRow(pid, "max_age", "")(m) && num(m["attempt"]) == 1 })
	if r1["outcome"] != "failed" || num(r1["deadline_boot_ns"]) != deadline {
		t.Errorf("first retry's record %v: want failed, deadline %d", r1, deadline)
	}
	if late := time.Duration(num(r1["lateness_ns"])); late < time.Second {
		t.Errorf("first retry's lateness %s: counted from the retry, not the deadline", late)
	}

	// An operator's kill takes effect now: a manual kill, not "already
	// being killed" (it fails too, and is retried as manual). Only while
	// an attempt is in flight (milliseconds, seconds apart) is it busy:
	// then the command is given again once that attempt is over.
	for i := 1; ; i++ {
		out := mustCtl(t, sock, "kill", strconv.Itoa(pid))
		if !strings.Contains(out, "already being killed") && strings.Contains(out, strconv.Itoa(pid)) {
			break
		}
		if i == 3 {
			t.Fatalf("supervisor kill of a retrying agent: %q", out)
		}
		d.waitLogs(t, len(d.findLogs(retryWarn(pid, "")))+1, 30*time.Second, retryWarn(pid, ""))
	}
	manual := d.waitLog(t, 30*time.Second, killRow(pid, "manual", "failed"))
	if manual["requested_by"] == nil || manual["attempt"] != nil {
		t.Errorf("manual kill record %v: want requested_by and a first attempt", manual)
	}
	d.waitLog(t, 10*time.Second, retryWarn(pid, "manual"))

	// Killable now: the next attempt kills it, and the retries stop.
	if _, err := io.WriteString(wr, "go\n"); err != nil {
		t.Fatal(err)
	}
	end := d.waitLog(t, 30*time.Second, func(m map[string]any) bool {
		return killRow(pid, "manual", "")(m) && m["outcome"] != "failed"
	})
	if end["outcome"] != "terminated" || num(end["attempt"]) < 1 || end["retry_pids"] != nil ||
		num(end["deadline_boot_ns"]) != num(manual["deadline_boot_ns"]) {
		t.Errorf("last record %v: want terminated by a retry of the manual kill, nothing retried", end)
	}
	if ws := proc.waitExit(t, 30*time.Second); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("agent ended %v, want SIGTERM", ws)
	}
	if as := d.agentsFor(t, pid); len(as) != 0 {
		t.Errorf("/agents still lists the dead agent: %+v", as)
	}
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Retrying != 0 {
		t.Errorf("kills_retrying %d after the process died", h.Retrying)
	}
	for _, reason := range []string{"max_age", "manual"} {
		want := len(d.findLogs(retryWarn(pid, reason)))
		waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, reason) == float64(want) },
			"retries{%s} = one per warning (%d)", reason, want)
	}
}

// The agent dies at its deadline but a member of its tree may not be
// signalled: the member is retried as a kill root of its own, with the
// agent's reason, session and deadline, until it is killed.
func TestIntegrationRetryEPERMMember(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 2 * time.Second
	d := startDaemonNoKill(t, "--max-age", age.String(), "--kill-grace", "1s", "--agent", "svtree", "--control-socket", "")
	dir := retryBins(t, "svtree", "svmember")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The agent, as root: starts the member through the test binary,
	// which becomes nobody and execs a shell that waits on fd 3, then
	// waits for it. The member execs the setuid sleep on a line.
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wr.Close() })
	script := execAsEnv + `=` + strconv.Itoa(nobodyUID) + ` "$1" "$2" -c 'read x <&3 && exec "$0" 600' "$3" & echo "member $!"; wait`
	cmd := exec.Command(filepath.Join(dir, "svtree"), "-c", script, "svtree", self,
		filepath.Join(dir, "svmember"), filepath.Join(dir, "setuid", "svmember"))
	cmd.ExtraFiles = []*os.File{rd}
	proc := runAgent(t, cmd)
	rd.Close()

	agentRow := d.waitLog(t, age+30*time.Second, killRow(proc.pid, "max_age", "failed"))
	w := d.waitLog(t, 10*time.Second, retryWarn(proc.pid, "max_age"))
	rp, _ := w["retry_pids"].([]any)
	if len(rp) != 1 {
		t.Fatalf("retry warning %v: want the member alone retried", w)
	}
	member := int(rp[0].(float64))
	mfd := pinned(t, member)
	if said := proc.waitPID(t, "member", 10*time.Second); said != member {
		t.Errorf("retried pid %d is not the member (agent said %d)", member, said)
	}
	if desc, _ := agentRow["descendants"].([]any); len(desc) != 1 || int(desc[0].(float64)) != member {
		t.Errorf("agent's record: descendants %v, want [%d]", agentRow["descendants"], member)
	}
	proc.waitExit(t, 30*time.Second) // the agent itself died at its deadline
	deadline := num(agentRow["deadline_boot_ns"])

	r1 := d.waitLog(t, 30*time.Second, killRow(member, "max_age", "failed"))
	if num(r1["attempt"]) != 1 || num(r1["deadline_boot_ns"]) != deadline || num(r1["session_pid"]) != int64(proc.pid) {
		t.Errorf("member's first retry %v: want attempt 1, the agent's deadline %d and session", r1, deadline)
	}
	v := d.retryingEntry(t, member)
	if v.Reason != "max_age" || int(v.SessionPID) != proc.pid || v.NextAttempt == nil {
		t.Errorf("/agents entry of the member %+v", v)
	}
	d.waitLogs(t, 1, 30*time.Second, retryWarn(member, "max_age"))
	// Counted when the failed attempt is recorded, which may come just
	// after the tracker's warning: wait for the count, bounded.
	waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, "max_age") >= 2 },
		"supervisor_kill_retries_total{reason=max_age} >= 2 after two retries")

	if _, err := io.WriteString(wr, "go\n"); err != nil {
		t.Fatal(err)
	}
	end := d.waitLog(t, 30*time.Second, func(m map[string]any) bool {
		return killRow(member, "max_age", "")(m) && m["outcome"] != "failed"
	})
	if end["outcome"] != "terminated" || num(end["attempt"]) < 2 || num(end["deadline_boot_ns"]) != deadline || end["retry_pids"] != nil {
		t.Errorf("member's last record %v: want terminated at a later attempt, the agent's deadline, nothing retried", end)
	}
	if !pidfdDead(mfd, 0) {
		t.Error("the member outlived its successful kill")
	}
	if as := d.agentsFor(t, member); len(as) != 0 {
		t.Errorf("/agents still lists the dead member: %+v", as)
	}
}

// Hostile local users against the daemon's endpoints (issue 17): a flood
// of idle connections, reading other users' processes, hogging /events,
// and control commands naming a process by PID alone.
//
// The hostile side is this test binary again, started as root with
// SUPERVISOR_TEST_HOSTILE=MODE and SUPERVISOR_TEST_CRED=UID:GID[:GROUPS];
// it drops to those credentials itself before doing anything (the binary
// sits in a directory only root may enter, so it cannot be exec'd as the
// user), then acts as an unprivileged local user would.

// The daemon's connection limits, as docs/operations.md (Endpoints) gives
// them.
const (
	tcpMaxConns      = 32  // each TCP listener's connections
	tcpConnsPerIP    = 8   // one remote address's, on a listener not on loopback
	tcpConnRequests  = 100 // a keep-alive connection is closed after this many requests
	apiGroupConns    = 32  // the --control-group members' API connections together
	apiStreamsPerUID = 4   // a member's /events streams
)

const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// startFlood runs the helper's flood (see hostileMain) as nobody, of n
// connections to addr, from the local address from[0] if given, and waits
// until each has been tried.
func startFlood(t *testing.T, addr string, n int, from ...string) *agent {
	t.Helper()
	fl := startHostile(t, fmt.Sprintf("%d:%d", nobodyUID, nobodyGID), "flood", append([]string{addr, strconv.Itoa(n)}, from...)...)
	fl.waitLine(t, "flooding ", 60*time.Second)
	return fl
}

// floodGoesOn fails the test at once if the flood fl has ended: what the
// test saw then was not under the flood.
func floodGoesOn(t *testing.T, fl *agent) {
	t.Helper()
	select {
	case <-fl.done:
		t.Fatal("the flood ended early: the test proved nothing")
	default:
	}
}

// startHostile runs the helper as cred (UID:GID[:GROUPS]). It runs until
// the test ends: its stdin, a pipe the test holds open, closes then.
func startHostile(t *testing.T, cred, mode string, args ...string) *agent {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), hostileEnv+"="+mode, hostileCredEnv+"="+cred)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	return runAgent(t, cmd)
}

// hostileGetAs runs one GET as cred and returns the status code (0 when
// the connection failed) and what the helper printed.
func hostileGetAs(t *testing.T, cred, target, path string) (int, string) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, target, path)
	cmd.Env = append(os.Environ(), hostileEnv+"=get", hostileCredEnv+"="+cred)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hostile get %s %s: %v\n%s", target, path, err, out)
	}
	s := string(out)
	if v, ok := strings.CutPrefix(s, "status "); ok {
		code, _ := strconv.Atoi(strings.Fields(v)[0])
		return code, s
	}
	return 0, s
}

// apiDir is a short directory for a test's API socket, traversable by
// everyone (0755) so that only the socket's own mode and the peer check
// stand between another user and the daemon.
func apiDir(t *testing.T) string {
	return publicTempDir(t, "sv-hostile-")
}

// within tries something that must answer within bound three times, each
// with a fresh bound (try must give up when ctx does), and fails the test
// unless at least two of them answered: one slow moment of a loaded
// machine is not the daemon's doing, a flood that holds the way is. It
// logs every attempt and how long it took.
func within(t *testing.T, what string, bound time.Duration, try func(ctx context.Context) error) {
	t.Helper()
	ok := 0
	var tries []string
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		t0 := time.Now()
		err := try(ctx)
		took := time.Since(t0)
		cancel()
		if err == nil {
			ok++
			tries = append(tries, took.Round(time.Millisecond).String())
		} else {
			tries = append(tries, fmt.Sprintf("%s: %v", took.Round(time.Millisecond), err))
		}
	}
	t.Logf("%s: %d of 3 within %s (%s)", what, ok, bound, strings.Join(tries, "; "))
	if ok < 2 {
		t.Errorf("%s: %d of 3 answered within %s, want at least 2: %s", what, ok, bound, strings.Join(tries, "; "))
	}
}

// getHealthz GETs /healthz with c and wants 200 and status ok.
func getHealthz(ctx context.Context, c *http.Client, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h healthView
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Status != "ok" {
		return fmt.Errorf("%s %+v %v", resp.Status, h, err)
	}
	return nil
}

// rootHealthz: /healthz on the daemon's API socket, as root.
func rootHealthz(d *testDaemon) func(context.Context) error {
	return func(ctx context.Context) error { return getHealthz(ctx, d.apiClient(0), d.url("/healthz")) }
}

// probeHealth: what the DaemonSet's probe runs, supervisor health on the
// API socket, with the bound as its --timeout: the command's own clock
// bounds the answer; the exec around it is not what is measured. (The race
// detector's pause at exit, a second by default, is turned off.)
func probeHealth(d *testDaemon, bound time.Duration) func(context.Context) error {
	return func(context.Context) error {
		cmd := exec.Command(supervisorBin, "health", "--api-socket", d.api, "--timeout", bound.String())
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		if !strings.Contains(string(out), `"status": "ok"`) {
			return fmt.Errorf("no ready status: %s", out)
		}
		return nil
	}
}

// tcpHealthz: /healthz on a TCP listener at addr, on a fresh connection
// (from the local address from, when given).
func tcpHealthz(addr, from string) func(context.Context) error {
	return func(ctx context.Context) error {
		dialer := &net.Dialer{}
		if from != "" {
			dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
		return getHealthz(ctx, c, "http://"+addr+"/healthz")
	}
}

// An unprivileged user holds 600 keep-alive connections to the --listen
// port of a daemon limited to 512 descriptors, each sending a request just
// inside the idle timeout, and retakes every slot freed: the daemon's
// descriptors stay bounded (the connection cap, accept-then-close), an
// agent started during the flood is matched and killed on time, root gets
// /healthz on the API socket within 1 s, so does the probe (supervisor
// health), and --metrics-listen, a second listener with a cap of its own,
// still answers a fresh connection. (Before, each connection held a
// descriptor for good: the daemon ran out, its /proc read at exec failed
// with EMFILE and the agent was never matched; then, with one cap for both
// listeners, the flood of one refused the other, and the kubelet's probe
// on it, which restarted the pod.)
func TestIntegrationHostileHTTPFlood(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("prlimit (util-linux) is needed: ", err)
	}
	const age, limit, conns = 3 * time.Second, 512, 600
	name := testutil.RandName("fl")
	sock := filepath.Join(apiDir(t), "api.sock")
	d := startDaemonCmd(t, exec.Command("prlimit", fmt.Sprintf("--nofile=%d:%d", limit, limit), "--",
		supervisorBin, "run", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--under", strconv.Itoa(os.Getpid()),
		"--state-dir", t.TempDir(), "--log-level", "info", "--control-socket", "", "--api-socket", sock,
		"--max-age", age.String(), "--kill-grace", "1s", "--agent", name))
	pid := d.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid)); err != nil || !strings.Contains(string(b), fmt.Sprintf("Max open files            %d                  %d", limit, limit)) {
		t.Fatalf("the daemon's descriptor limit is not %d: %v\n%s", limit, err, b)
	}
	ml := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := ml["metrics_listen"].(string)
	if maddr == "" || maddr == d.addr {
		t.Fatalf("--metrics-listen on %q, --listen on %q: want two listeners", maddr, d.addr)
	}
	base := openFDs(pid)

	fl := startFlood(t, d.addr, conns)
	within(t, "/healthz on the API socket, as root", time.Second, rootHealthz(d))
	within(t, "supervisor health (the probe)", time.Second, probeHealth(d, time.Second))
	within(t, "/healthz on --metrics-listen", time.Second, tcpHealthz(maddr, ""))
	t.Logf("flood of %d connections up: the daemon holds %d descriptors (%d before)", conns, openFDs(pid), base)

	a := startAgent(t, name)
	m := d.waitLog(t, age+30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
	if m["msg"] != "kill" || m["outcome"] != "terminated" {
		t.Errorf("kill of the agent started during the flood: %v", m)
	}
	// The connections never reach into the half of the descriptors the
	// reaper keeps for kills (reap.Pins: pidfds at match below limit/2).
	if n := openFDs(pid); n < 0 || n >= limit/2 {
		t.Errorf("the daemon holds %d descriptors under the flood, want fewer than %d", n, limit/2)
	}
	within(t, "after the kill: /healthz on the API socket", time.Second, rootHealthz(d))
	within(t, "after the kill: supervisor health", time.Second, probeHealth(d, time.Second))
	within(t, "after the kill: /healthz on --metrics-listen", time.Second, tcpHealthz(maddr, ""))
	floodGoesOn(t, fl)
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_connections"}`); got == 0 {
		t.Errorf("no TCP connection refused past the cap: the flood did not reach it")
	} else {
		t.Logf("TCP connections refused past the cap: %.0f", got)
	}
	if got := metricValue(t, d, `supervisor_http_connections{listener="listen"}`); got > tcpMaxConns {
		t.Errorf("%.0f connections open on --listen, want at most %d", got, tcpMaxConns)
	}
}

// One address cannot take a listener that is not on loopback (the node's
// metrics listener, which every pod reaches): an unprivileged user floods
// it from 127.0.0.2 with 200 keep-alive connections, and a fresh
// connection from 127.0.0.3 is still answered. (Before, one client held
// every slot and the listener refused everyone else.)
func TestIntegrationHostileHTTPFloodPerAddress(t *testing.T) {
	needRoot(t)
	// Linux routes all of 127/8 to lo, so the two clients are two
	// addresses on one machine; the listener is on the node's address
	// (reached from 127.0.0.x over lo too), or on every address when the
	// machine has no other.
	ip := nodeIP(t)
	listen := net.JoinHostPort(ip, "0")
	if net.ParseIP(ip).IsLoopback() {
		listen = "0.0.0.0:0"
	}
	d := startDaemon(t, "--max-age", "1h", "--metrics-listen", listen)
	ml := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := ml["metrics_listen"].(string)
	host, port, _ := net.SplitHostPort(maddr)
	target := maddr
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		target = net.JoinHostPort("127.0.0.1", port)
	}
	fl := startFlood(t, target, 200, "127.0.0.2")
	within(t, "/healthz on the metrics listener from 127.0.0.3", time.Second, tcpHealthz(target, "127.0.0.3"))
	floodGoesOn(t, fl)
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_per_ip"}`); got == 0 {
		t.Errorf("no connection from 127.0.0.2 refused past the per-address cap: the flood did not reach it")
	}
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_connections"}`); got != 0 {
		t.Errorf("%.0f connections refused past the listener's cap: one address filled it", got)
	}
	if got := metricValue(t, d, `supervisor_http_connections{listener="metrics_listen"}`); got > tcpConnsPerIP+3 {
		t.Errorf("%.0f connections open on the metrics listener, want about %d (the flood's share) at most", got, tcpConnsPerIP)
	}
}

// An unprivileged user cannot read /agents or /events: the API socket's
// file refuses it at connect(2); with the file's mode loosened the peer
// check answers 403; the TCP listener has neither endpoint (404).
// Before, any local user read every agent's command line over TCP.
func TestIntegrationHostileAPIRefused(t *testing.T) {
	if ranApart(t) {
		return
	}
	name := testutil.RandName("sec")
	secret := testutil.RandName("token-")
	sock := filepath.Join(apiDir(t), "api.sock")
	d := startDaemon(t, "--max-age", "1h", "--agent", name, "--api-socket", sock)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("API socket %v %v: want mode 0600 without a control group", fi, err)
	}
	a := startAgent(t, name, "-label", secret) // its command line holds a secret
	d.waitTracked(t, a.pid)
	var root []agentView
	d.get(t, "/agents", &root)
	if len(root) != 1 || !strings.Contains(root[0].Cmdline, secret) {
		t.Fatalf("root's /agents: %+v, want the agent with its command line", root)
	}

	nobody := fmt.Sprintf("%d:%d", nobodyUID, nobodyGID)
	check := func(what, target, path string, want func(code int, out string) bool) {
		t.Helper()
		code, out := hostileGetAs(t, nobody, target, path)
		if !want(code, out) || strings.Contains(out, secret) {
			t.Errorf("nobody GET %s %s (%s): %q", target, path, what, out)
		}
	}
	for _, path := range []string{"/agents", "/events", "/healthz"} {
		check("the socket's mode", "unix:"+sock, path, func(code int, out string) bool {
			return code == 0 && strings.Contains(out, "permission denied")
		})
	}
	// The peer check alone.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/agents", "/events", "/healthz"} {
		check("the peer check", "unix:"+sock, path, func(code int, out string) bool {
			return code == http.StatusForbidden && strings.Contains(out, "the API socket is for root") && strings.Contains(out, "uid 65534")
		})
	}
	refused := d.waitLog(t, 10*time.Second, msgStarts("api socket: request refused"))
	if num(refused["uid"]) != nobodyUID {
		t.Errorf("refusal logged as %v, want uid %d", refused, nobodyUID)
	}
	// TCP: /healthz for anyone, never the processes.
	for _, path := range []string{"/agents", "/events"} {
		check("TCP", "tcp:"+d.addr, path, func(code int, out string) bool {
			return code == http.StatusNotFound && strings.Contains(out, "--api-socket")
		})
	}
	check("TCP", "tcp:"+d.addr, "/healthz", func(code int, _ string) bool { return code == http.StatusOK })
	// And root still reads it all.
	if v := d.agentsFor(t, a.pid); len(v) != 1 {
		t.Errorf("root's /agents after the refusals: %+v", v)
	}
}

// Members of --control-group may read the API socket, but together they
// cannot take root's /events stream: at most a few streams per user and a
// bounded share of the connections. Ten users in the group ask for six
// streams each; then root opens eight. Before, anyone could hold all 64
// /events slots over TCP.
func TestIntegrationHostileAPIStreamLimit(t *testing.T) {
	if ranApart(t) {
		return
	}
	g, err := user.LookupGroup("users")
	if err != nil {
		t.Fatal("the group users is needed: ", err)
	}
	// The daemon makes the socket's directory 0710 and the socket 0660,
	// both in the group: members get in by the file modes, not by chmod.
	sock := filepath.Join(apiDir(t), "run", "api.sock")
	d := startDaemon(t, "--max-age", "1h", "--api-socket", sock, "--control-group", "users", "--summary-interval", "1s")
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("API socket %v %v: want mode 0660 with a control group", fi, err)
	}
	const users, each = 10, 6
	var helpers []*agent
	for i := range users {
		helpers = append(helpers, startHostile(t, fmt.Sprintf("%d:%d:%s", 60100+i, nobodyGID, g.Gid), "streams", sock, strconv.Itoa(each)))
	}
	total := 0
	for i, h := range helpers {
		l := h.waitLine(t, "streams ", 60*time.Second)
		n, _ := strconv.Atoi(strings.TrimPrefix(l, "streams "))
		if n > apiStreamsPerUID {
			t.Errorf("uid %d holds %d /events streams, want at most %d", 60100+i, n, apiStreamsPerUID)
		}
		total += n
	}
	if total == 0 || total > apiGroupConns {
		t.Errorf("the group's members hold %d streams in all, want between 1 and %d", total, apiGroupConns)
	}
	t.Logf("%d members hold %d streams", users, total)
	for i := range 8 {
		s := openEvents(t, d, "?types=snapshot")
		if m := s.next(t, 30*time.Second); m["type"] != "snapshot" {
			t.Errorf("root's stream %d: %v", i, m)
		}
	}
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="api_streams"}`); got == 0 {
		t.Errorf("no stream refused to the members")
	}
}

// PID@START: a control command that names a process with a start time it
// does not have is refused and changes nothing; with the start /agents
// shows, it works. kill --force, which can name any process, too. A stale
// START is simulated: the PID is the same live process, named with its
// start moved by an hour or a second, which is what the daemon sees when
// the PID was reused meanwhile (it compares the live process's start); no
// PID is actually reused here.
func TestIntegrationHostilePIDStart(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--control-socket", sock)
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	// The start exactly as /agents shows it.
	var raw []map[string]any
	d.get(t, "/agents", &raw)
	start := ""
	for _, m := range raw {
		if int(num(m["pid"])) == a.pid {
			start, _ = m["started_at"].(string)
		}
	}
	st, err := time.Parse(time.RFC3339Nano, start)
	if err != nil {
		t.Fatalf("started_at %q in /agents: %v", start, err)
	}
	id := func(t0 time.Time) string { return fmt.Sprintf("%d@%s", a.pid, t0.Format(time.RFC3339Nano)) }
	stale := []string{id(st.Add(-time.Hour)), id(st.Add(2 * time.Second)), id(st.Add(-time.Second))}
	for _, s := range stale {
		for _, args := range [][]string{{"extend", s, "30m"}, {"keep", s}, {"kill", s}, {"kill", s, "--force"}} {
			if _, errs, code := ctl(t, sock, args...); code != 1 || !strings.Contains(errs, "refused") || !strings.Contains(errs, "started at") {
				t.Errorf("supervisor %s: exit %d %q, want refused for another start", strings.Join(args, " "), code, errs)
			}
		}
	}
	if _, errs, code := ctl(t, sock, "extend", fmt.Sprintf("%d@yesterday", a.pid), "30m"); code != 2 || !strings.Contains(errs, "START") {
		t.Errorf("a START that is no time: exit %d %q, want a usage error", code, errs)
	}
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft > 3600 || !a.alive() {
		t.Fatalf("after refused commands: %+v alive %v, want the agent untouched", v, a.alive())
	}
	// The very string /agents shows, not id(st).
	out := mustCtl(t, sock, "extend", fmt.Sprintf("%d@%s", a.pid, start), "30m")
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft < 3600+1700 {
		t.Errorf("extend %d@%s: %q, /agents %+v, want 30 more minutes", a.pid, start, out, v)
	}

	// kill --force of a process that is no agent, named with the start
	// /proc gives (as ps does): a stale one is refused, the right one kills.
	other := startAgent(t, testutil.RandName("idle"))
	other.waitLine(t, "pid ", 10*time.Second)
	procfs, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	info, err := procfs.Stat(int32(other.pid))
	if err != nil {
		t.Fatal(err)
	}
	ost := tracker.Time(info.Start.NS, boottime())
	oid := func(t0 time.Time) string { return fmt.Sprintf("%d@%s", other.pid, t0.Format(time.RFC3339Nano)) }
	if _, errs, code := ctl(t, sock, "kill", oid(ost.Add(-time.Minute)), "--force"); code != 1 || !strings.Contains(errs, "refused") {
		t.Errorf("kill --force with a stale start: exit %d %q, want refused", code, errs)
	}
	if !other.alive() {
		t.Fatal("killed with a stale start")
	}
	mustCtl(t, sock, "kill", oid(ost), "--force")
	other.waitExit(t, 20*time.Second)

	// The agent itself, by the start /agents shows.
	mustCtl(t, sock, "kill", fmt.Sprintf("%d@%s", a.pid, start))
	m := d.waitLog(t, 20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	if m["reason"] != "manual" {
		t.Errorf("kill %d@%s: %v, want reason manual", a.pid, start, m)
	}
}

// A keep-alive connection to a TCP listener is let go after
// tcpConnRequests requests: the last answer says Connection: close and the
// daemon closes it. (Before, a client sending a request before each idle
// timeout held its connection for good.)
func TestIntegrationHostileHTTPConnectionLifetime(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	c, err := net.DialTimeout("tcp", d.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	for i := 1; i <= tcpConnRequests; i++ {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("answer %d: %s", i, resp.Status)
		}
		if resp.Close != (i == tcpConnRequests) {
			t.Fatalf("answer %d: Connection: close %v, want it on answer %d only", i, resp.Close, tcpConnRequests)
		}
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after answer %d: read %v %v, want the daemon to close the connection", tcpConnRequests, n, err)
	}
}
