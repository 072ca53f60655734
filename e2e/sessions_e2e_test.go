package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// Sessions and leftovers, end to end: real agents (the fake agent under the
// name claude), real forks, setsid and double forks that the kernel
// reparents to PID 1, real signals. Every daemon is scoped with --under this
// test process (startDaemon). The leftovers are reparented away from the
// test, so every PID a test learns from a child's output is only ever
// touched through a pidfd that ourPidfd proved to be ours.

// TestIntegrationSessionLeftovers: an agent starts a TERM-ignoring child, a
// daemon (setsid, double fork, reparented away), a child that exits within
// the grace, a child with REAPER_KEEP=1 and one matched by --keep, then
// exits by itself. The first two are killed after the grace, never before;
// the others are never signalled.
func TestIntegrationSessionLeftovers(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	keepComm := testutil.RandName("kp")[:10] // well under the 15 characters of a comm
	keepExe := selfAs(t, keepComm)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(),
		"--leftover-grace", leftoverGrace.String(), "--keep", keepComm)
	a := startAgent(t, "claude", "-exit-file", r.path("agent-exit"),
		"-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"),
		"-spawn", "label=daemon,double-fork,term="+r.path("daemon.term"),
		"-spawn", "label=brief,term="+r.path("brief.term")+",exit-file="+r.path("brief-exit"),
		"-spawn", "label=marked,env=REAPER_KEEP=1,term="+r.path("marked.term"),
		"-spawn", "label=ruled,exe="+keepExe+",term="+r.path("ruled.term"))
	pids, fds := a.children(t, "stubborn", "daemon", "brief", "marked", "ruled")
	d.waitTracked(t, a.pid)

	exitReq := r.trigger(t, "agent-exit")
	if ws := a.waitExit(t, 10*time.Second); ws.ExitStatus() != 0 {
		t.Fatalf("agent exited with %v, want 0 by itself", ws)
	}
	queued := map[string]map[string]any{}
	for _, l := range []string{"stubborn", "daemon", "brief"} {
		queued[l] = d.waitLog(t, 10*time.Second, leftoverOf(pids[l]))
	}
	// The brief child exits by itself well inside the grace.
	r.trigger(t, "brief-exit")
	if !pidfdDead(fds["brief"], 5*time.Second) {
		t.Fatal("the brief child did not exit when told")
	}
	if died := boottime(); died >= num(queued["brief"]["deadline_boot_ns"]) {
		t.Fatalf("test too slow: the brief child exited %s after its leftover deadline", time.Duration(died-num(queued["brief"]["deadline_boot_ns"])))
	}

	stubborn := d.waitLog(t, leftoverGrace+30*time.Second, leftoverKillOf(pids["stubborn"]))
	daemonKill := d.waitLog(t, leftoverGrace+30*time.Second, leftoverKillOf(pids["daemon"]))
	for l, m := range map[string]map[string]any{"stubborn": stubborn, "daemon": daemonKill} {
		sig := checkLeftoverKill(t, m, a, exitReq, leftoverGrace, exitSlack, time.Second)
		if num(m["deadline_boot_ns"]) != num(queued[l]["deadline_boot_ns"]) {
			t.Errorf("%s: killed with deadline %v, queued with %v", l, m["deadline_boot_ns"], queued[l]["deadline_boot_ns"])
		}
		if m["msg"] != "kill" {
			t.Errorf("%s: %v, want a kill line", l, m["msg"])
		}
		term, ok := r.termAt(l + ".term")
		if !ok {
			t.Errorf("%s never got SIGTERM", l)
		} else if term < exitReq+int64(leftoverGrace) || term < sig {
			t.Errorf("%s got SIGTERM %s after the agent was let exit, before the %s grace", l, time.Duration(term-exitReq), leftoverGrace)
		}
		if !pidfdDead(fds[l], 10*time.Second) {
			t.Errorf("%s (%d) survived its leftover kill", l, pids[l])
		}
	}
	if stubborn["outcome"] != "killed" || stubborn["final_signal"] != "KILL" {
		t.Errorf("TERM-ignoring leftover: outcome %v / %v, want killed / KILL", stubborn["outcome"], stubborn["final_signal"])
	}
	if daemonKill["outcome"] != "terminated" || daemonKill["final_signal"] != "TERM" {
		t.Errorf("reparented daemon: outcome %v / %v, want terminated / TERM", daemonKill["outcome"], daemonKill["final_signal"])
	}

	// Well after the grace and the kill grace: the kept ones were never
	// queued nor signalled and live on; the brief one exited by itself.
	// (Nothing announces that nothing happened: a window from the kills.)
	sleepUntil(num(stubborn["signalled_boot_ns"]) + int64(leftKillGrace+time.Second))
	for _, l := range []string{"marked", "ruled"} {
		if pidfdDead(fds[l], 0) {
			t.Errorf("kept child %s (%d) died", l, pids[l])
		}
		d.noLogs(t, leftoverOf(pids[l]), "kept child %s was queued as a leftover", l)
	}
	for _, l := range []string{"marked", "ruled", "brief"} {
		if _, ok := r.termAt(l + ".term"); ok {
			t.Errorf("%s got SIGTERM", l)
		}
		d.noLogs(t, leftoverKillOf(pids[l]), "%s has a kill line", l)
	}
	d.noLogs(t, leftoverKillOf(a.pid), "the agent, which exited by itself, has a kill line")
}

// TestIntegrationNonAgentOrphan: a process that is no agent double-forks a
// daemon, leaves a child behind and exits. Neither is anyone's leftover. A
// claude exiting at the same time, whose leftover is killed, shows that the
// grace has passed.
func TestIntegrationNonAgentOrphan(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", leftoverGrace.String())
	other := startAgent(t, "builder", "-exit-file", r.path("exit"),
		"-spawn", "label=orphan,double-fork,term="+r.path("orphan.term"),
		"-spawn", "label=kid,term="+r.path("kid.term"))
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=sentinel,term="+r.path("sentinel.term"))
	opids, ofds := other.children(t, "orphan", "kid")
	apids, _ := a.children(t, "sentinel")
	d.waitTracked(t, a.pid)
	exitReq := r.trigger(t, "exit")
	other.waitExit(t, 10*time.Second)
	a.waitExit(t, 10*time.Second)
	m := d.waitLog(t, leftoverGrace+30*time.Second, leftoverKillOf(apids["sentinel"]))
	sig := checkLeftoverKill(t, m, a, exitReq, leftoverGrace, exitSlack, time.Second)
	sleepUntil(sig + int64(leftKillGrace)) // a window for their kill, had they been queued with the sentinel
	for _, l := range []string{"orphan", "kid"} {
		if pidfdDead(ofds[l], 0) {
			t.Errorf("non-agent's %s (%d) died", l, opids[l])
		}
		if _, ok := r.termAt(l + ".term"); ok {
			t.Errorf("non-agent's %s got SIGTERM", l)
		}
		d.noLogs(t, leftoverOrKillOf(opids[l]), "non-agent's %s treated as a leftover", l)
	}
}

// TestIntegrationNestedAgent: a claude started by a claude belongs to the
// outer session; when the outer one exits, the inner one (its own max age
// far away) is a leftover, killed at the outer's exit + grace.
func TestIntegrationNestedAgent(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	inner := selfAs(t, "claude")
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", leftoverGrace.String())
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=inner,exe="+inner+",term="+r.path("inner.term"))
	pids, fds := a.children(t, "inner")
	d.waitTracked(t, a.pid)
	// The inner claude is an agent too, with its own deadline.
	d.waitTracked(t, pids["inner"])
	m, _, sig := leftoverKilled(t, d, r, a, "exit", pids["inner"], leftoverGrace, exitSlack)
	if m["outcome"] != "terminated" {
		t.Errorf("inner agent: outcome %v, want terminated", m["outcome"])
	}
	if term, ok := r.termAt("inner.term"); !ok || term < sig {
		t.Errorf("inner agent's SIGTERM: %v (recorded %v), want after %d", term, ok, sig)
	}
	if !pidfdDead(fds["inner"], 10*time.Second) {
		t.Error("the inner agent survived")
	}
	if n := len(d.findLogs(leftoverKillOf(pids["inner"]))); n != 1 {
		t.Errorf("%d kill lines for the inner agent, want 1", n)
	}
}

// TestIntegrationMaxAgeNoDoubleKill: an agent reaped at max age with a
// TERM-ignoring child: one kill for the tree (reason max_age); the child is
// no leftover to chase again.
func TestIntegrationMaxAgeNoDoubleKill(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	const age, grace = 2 * time.Second, 2 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", leftKillGrace.String(), "--leftover-grace", grace.String())
	a := startAgent(t, "claude", "-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"))
	pids, fds := a.children(t, "stubborn")
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, age+30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
	if m["reason"] != "max_age" {
		t.Errorf("reason %v, want max_age", m["reason"])
	}
	if m["final_signal"] != "KILL" {
		t.Errorf("final signal %v, want KILL (the child ignores SIGTERM)", m["final_signal"])
	}
	if desc, _ := m["descendants"].([]any); len(desc) != 1 || num(desc[0]) != int64(pids["stubborn"]) {
		t.Errorf("descendants %v, want [%d]", desc, pids["stubborn"])
	}
	if !pidfdDead(fds["stubborn"], 10*time.Second) {
		t.Fatal("the TERM-ignoring child survived the tree kill")
	}
	// Past where a leftover kill of the child would have come.
	sleepUntil(a.exited + int64(grace+leftKillGrace+time.Second))
	tree := d.findLogs(func(m map[string]any) bool {
		return leftoverKillOf(a.pid)(m) || leftoverKillOf(pids["stubborn"])(m) ||
			(m["reason"] == "leftover" && num(m["session_pid"]) == int64(a.pid))
	})
	if len(tree) != 1 {
		t.Errorf("%d kill lines for the tree, want 1: %v", len(tree), tree)
	}
	d.noLogs(t, leftoverOf(pids["stubborn"]), "the child of an agent killed at max age was queued as a leftover")
}

// TestIntegrationLeftoversKeep: with --leftovers keep nothing is signalled
// after the agent exits.
func TestIntegrationLeftoversKeep(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	const grace = 2 * time.Second
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", grace.String(), "--leftovers", "keep")
	a := startAgent(t, "claude", "-exit-file", r.path("exit"),
		"-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"),
		"-spawn", "label=daemon,double-fork,term="+r.path("daemon.term"))
	pids, fds := a.children(t, "stubborn", "daemon")
	d.waitTracked(t, a.pid)
	r.trigger(t, "exit")
	a.waitExit(t, 10*time.Second)
	// There is no event for "nothing happened": a window past grace + kill
	// grace.
	sleepUntil(a.exited + int64(grace+leftKillGrace+1500*time.Millisecond))
	for l, pid := range pids {
		if pidfdDead(fds[l], 0) {
			t.Errorf("%s (%d) died with --leftovers keep", l, pid)
		}
		if _, ok := r.termAt(l + ".term"); ok {
			t.Errorf("%s got SIGTERM with --leftovers keep", l)
		}
		d.noLogs(t, leftoverOrKillOf(pid), "%s with --leftovers keep", l)
	}
}

// TestIntegrationLeftoverAcrossRestart: the daemon is SIGKILLed in the
// middle of a grace, after it persisted the session; the next daemon, with
// the same state dir, kills the leftovers (both reparented to PID 1, which
// its scan cannot tie to the agent) at their original time.
func TestIntegrationLeftoverAcrossRestart(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	// Long enough for a daemon (race-detector build) to start in the middle.
	const grace = 6 * time.Second
	state := t.TempDir()
	args := []string{"--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", grace.String(), "--state-dir", state}
	da := startDaemon(t, args...)
	a := startAgent(t, "claude", "-exit-file", r.path("exit"),
		"-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"),
		"-spawn", "label=daemon,double-fork,term="+r.path("daemon.term"))
	pids, fds := a.children(t, "stubborn", "daemon")
	da.waitTracked(t, a.pid)
	exitReq := r.trigger(t, "exit")
	a.waitExit(t, 10*time.Second)
	queued := map[string]map[string]any{}
	last := 0
	for _, l := range []string{"stubborn", "daemon"} {
		var i int
		queued[l], i = da.waitLogFrom(t, 0, 10*time.Second, leftoverOf(pids[l]))
		last = max(last, i)
	}
	// Persisted after the agent's exit (the queue lines came from it).
	da.waitLogFrom(t, last+1, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "sessions persisted" })
	da.stopSignal = os.Kill
	da.stop(t)
	if v := da.findLogs(func(m map[string]any) bool { return m["msg"] == "kill" }); len(v) > 0 {
		t.Fatalf("daemon A killed before it was stopped: %v", v)
	}
	if _, ok := savedMember(t, state, pids["daemon"]); !ok {
		t.Errorf("sessions.json does not name the reparented daemon %d a member", pids["daemon"])
	}

	db := startDaemon(t, args...)
	if up := boottime(); up >= num(queued["stubborn"]["deadline_boot_ns"])-int64(500*time.Millisecond) {
		t.Fatalf("test too slow: daemon B was up %s after the leftover deadline; raise the grace",
			time.Duration(up-num(queued["stubborn"]["deadline_boot_ns"])))
	}
	for _, l := range []string{"stubborn", "daemon"} {
		m := db.waitLog(t, grace+30*time.Second, leftoverKillOf(pids[l]))
		sig := checkLeftoverKill(t, m, a, exitReq, grace, exitSlack, time.Second)
		if num(m["deadline_boot_ns"]) != num(queued[l]["deadline_boot_ns"]) {
			t.Errorf("%s: daemon B's deadline is %s off daemon A's (its original time)",
				l, time.Duration(num(m["deadline_boot_ns"])-num(queued[l]["deadline_boot_ns"])))
		}
		if term, ok := r.termAt(l + ".term"); !ok || term < sig || term < exitReq+int64(grace) {
			t.Errorf("%s: SIGTERM at %d (recorded %v), want after %d and the agent's exit + grace", l, term, ok, sig)
		}
		if !pidfdDead(fds[l], 10*time.Second) {
			t.Errorf("%s (%d) survived", l, pids[l])
		}
	}
}

// TestIntegrationLeftoverPolling: with /proc polling the lineage comes from
// the polls: a child seen while its agent lived is killed after the grace.
func TestIntegrationLeftoverPolling(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	const grace, poll = 2 * time.Second, 200 * time.Millisecond
	d := startDaemon(t, "--source", "proc", "--poll-interval", poll.String(), "--max-age", "1h",
		"--kill-grace", leftKillGrace.String(), "--leftover-grace", grace.String())
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"))
	pids, fds := a.children(t, "stubborn")
	d.waitTracked(t, a.pid)
	// A poll saw the child while its agent lives: /agents counts it in
	// the agent's session.
	waitFor(t, 10*time.Second, func() bool {
		as := d.agentsFor(t, a.pid)
		return len(as) == 1 && as[0].Members >= 2
	}, "a poll seeing the child %d in the session of %d", pids["stubborn"], a.pid)
	// The exit is seen by the next poll: up to one interval late.
	_, exitReq, _ := leftoverKilled(t, d, r, a, "exit", pids["stubborn"], grace, poll+exitSlack)
	if term, ok := r.termAt("stubborn.term"); !ok || term < exitReq+int64(grace) {
		t.Errorf("SIGTERM at %d (recorded %v), want after the agent's exit + grace", term, ok)
	}
	if !pidfdDead(fds["stubborn"], 10*time.Second) {
		t.Error("the leftover survived")
	}
}

// TestIntegrationLeftoverDryRun: --dry-run says "would kill leftover" and
// signals nothing.
func TestIntegrationLeftoverDryRun(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	const grace = 2 * time.Second
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", grace.String(), "--dry-run")
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=stubborn,ignore-term,term="+r.path("stubborn.term"))
	pids, fds := a.children(t, "stubborn")
	d.waitTracked(t, a.pid)
	m, _, sig := leftoverKilled(t, d, r, a, "exit", pids["stubborn"], grace, exitSlack)
	if m["msg"] != "would kill leftover" || m["dry_run"] != true || m["outcome"] != "dry_run" {
		t.Errorf("dry run reported %v", m)
	}
	sleepUntil(sig + int64(leftKillGrace+500*time.Millisecond)) // past where a real kill would have ended
	if pidfdDead(fds["stubborn"], 0) {
		t.Error("dry run killed the leftover")
	}
	if _, ok := r.termAt("stubborn.term"); ok {
		t.Error("dry run sent SIGTERM")
	}
	d.noLogs(t, func(m map[string]any) bool { return m["msg"] == "kill" }, "dry run logged kills")
}

// TestIntegrationKeepAfterExec: an agent's shell forks subshells that wait,
// then exec a process with REAPER_KEEP=1 in its environment, or one whose
// name a --keep rule matches. Between fork and exec each subshell has the
// agent's name and environment; what counts is what it is once it has
// exec'd. A plain child shows when the grace has passed.
func TestIntegrationKeepAfterExec(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	keepComm := testutil.RandName("kp")[:10]
	keepSleep := linkAs(t, "/bin/sleep", keepComm)
	script := r.script(t, "claude", `#!/bin/bash
(sleep 0.3; REAPER_KEEP=1 exec sleep 1000) &
echo "child $! marked"
(sleep 0.3; exec "`+keepSleep+`" 1000) &
echo "child $! ruled"
sleep 1000 &
echo "child $! plain"
sleep 0.6
echo ready
while [ ! -e "`+r.path("exit")+`" ]; do sleep 0.02; done
`)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(),
		"--leftover-grace", leftoverGrace.String(), "--keep", keepComm)
	a := startScript(t, script)
	pids, fds := a.children(t, "marked", "ruled", "plain")
	a.waitLine(t, "ready", 10*time.Second)
	_, _, sig := leftoverKilled(t, d, r, a, "exit", pids["plain"], leftoverGrace, exitSlack)
	if !pidfdDead(fds["plain"], 10*time.Second) {
		t.Error("the plain leftover survived")
	}
	sleepUntil(sig + int64(leftKillGrace+500*time.Millisecond)) // a window for their kill, had they been queued with it
	for _, l := range []string{"marked", "ruled"} {
		if pidfdDead(fds[l], 0) {
			t.Errorf("kept %s (%d) died", l, pids[l])
		}
		d.noLogs(t, leftoverOrKillOf(pids[l]), "kept %s", l)
	}
}
