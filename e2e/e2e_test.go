package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// Every daemon here runs with --under the test process (startDaemon), so it
// can only ever kill what these tests started.

func TestIntegrationAgentStartedAfterDaemon(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "2s")
	a := startAgent(t, "claude")
	v := d.waitTracked(t, a.pid)
	if v.Rule != "claude" || v.Comm != "claude" {
		t.Errorf("tracked as %+v", v)
	}
	m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	ws := a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, maxAge)
	if m["start_exact"] != true {
		t.Error("an agent seen from its fork should have an exact start")
	}
	if m["outcome"] != "terminated" || m["final_signal"] != "TERM" {
		t.Errorf("outcome %v / %v, want terminated / TERM", m["outcome"], m["final_signal"])
	}
	if ws.ExitStatus() != 143 {
		t.Errorf("agent exit %v, want 143 (its SIGTERM handler)", ws)
	}
}

func TestIntegrationAgentStartedBeforeDaemon(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 4 * time.Second
	a := startAgent(t, "claude")
	a.waitLine(t, "pid", 10*time.Second)
	// Start the daemon well into the agent's life: its deadline is the
	// agent's start plus max age, not the daemon's start plus max age.
	sleepUntil(a.t0 + int64(1500*time.Millisecond))
	daemonStart := boottime()
	d := startDaemon(t, "--max-age", age.String())
	m := d.waitLog(t, age+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
	if m["start_exact"] != false {
		t.Error("an agent found by the scan has a clock-tick start")
	}
	if sig := num(m["signalled_boot_ns"]); sig >= daemonStart+int64(age) {
		t.Errorf("signalled %s after the daemon started: its age was counted from the daemon's start", time.Duration(sig-daemonStart))
	}
	// Tick rounding may add up to one tick, never more.
	if late := time.Duration(num(m["signalled_boot_ns"]) - (a.t0 + int64(age))); late > 500*time.Millisecond {
		t.Errorf("signalled %s after start+max age", late)
	}
}

func TestIntegrationRenamedByPrctl(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String())
	// Starts as "node-x", becomes "claude" as Node's process.title does.
	a := startAgent(t, "node-x", "-rename", "claude", "-rename-delay", "300ms")
	a.waitLine(t, "renamed", 10*time.Second)
	v := d.waitTracked(t, a.pid)
	if v.Comm != "claude" {
		t.Errorf("comm %q, want claude", v.Comm)
	}
	m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, maxAge)
	// Age counts from the process start, not from the rename.
	if start := num(m["start_boot_ns"]); start > a.t0+int64(200*time.Millisecond) {
		t.Errorf("start %s after fork: counted from the rename?", time.Duration(start-a.t0))
	}
}

func TestIntegrationNpmRule(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String())
	// A worker whose command line says agent, one that does not, and one
	// that renames itself the way real npm does (comm "npm run agent:r").
	worker := startAgent(t, "npm", "--", "run", "agent:run:single")
	other := startAgent(t, "npm", "--", "install")
	titled := startAgent(t, "node", "-rename", "npm run agent:r", "--", "run", "agent:run:single")
	titled.waitLine(t, "renamed", 10*time.Second)
	other.waitLine(t, "pid", 10*time.Second)

	d.waitTracked(t, worker.pid)
	d.waitTracked(t, titled.pid)
	for _, a := range []*agent{worker, titled} {
		m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
		a.waitExit(t, 10*time.Second)
		checkKill(t, m, a, maxAge)
		if m["rule"] != "npm*:agent" {
			t.Errorf("pid %d matched rule %v", a.pid, m["rule"])
		}
	}
	if !other.alive() || len(d.findLogs(killOf(other.pid))) > 0 || len(d.agentsFor(t, other.pid)) > 0 {
		t.Errorf("npm without 'agent' in its command line was tracked or killed")
	}
}

func TestIntegrationMultiThreadedAgent(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "4s")
	a := startAgent(t, "claude", "-threads", "50")
	d.waitTracked(t, a.pid)
	a.waitLine(t, "threads done", 10*time.Second)
	// 50 threads renamed themselves and exited; the process is one entry
	// and still an agent.
	if n := len(d.agentsFor(t, a.pid)); n != 1 {
		t.Fatalf("agent %d has %d entries after its threads exited, want 1", a.pid, n)
	}
	m := d.waitLog(t, 30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, 4*time.Second)
	d.noLogs(t, func(m map[string]any) bool { return m["msg"] == "agent" && m["comm"] == "worker" }, "a thread rename made an agent")
}

func TestIntegrationIgnoresTerm(t *testing.T) {
	if ranApart(t) {
		return
	}
	const grace = time.Second
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", grace.String())
	a := startAgent(t, "claude", "-ignore-term")
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, maxAge+30*time.Second, killOf(a.pid))
	ws := a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, maxAge)
	if ws.Signal() != syscall.SIGKILL {
		t.Errorf("agent died of %v, want SIGKILL", ws)
	}
	if m["outcome"] != "killed" || m["final_signal"] != "KILL" {
		t.Errorf("outcome %v / %v, want killed / KILL", m["outcome"], m["final_signal"])
	}
	if a.exited < num(m["signalled_boot_ns"])+int64(grace) {
		t.Errorf("SIGKILLed %s after SIGTERM, before the %s grace", time.Duration(a.exited-num(m["signalled_boot_ns"])), grace)
	}
}

func TestIntegrationTreeWithTermIgnoringGrandchild(t *testing.T) {
	if ranApart(t) {
		return
	}
	const grace = time.Second
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", grace.String())
	a := startAgent(t, "claude", "-children", "2", "-grandchildren", "1", "-grandchild-ignore-term")
	// The agent, 2 children, 2 grandchildren each print their pid.
	var fds []int
	var pids []int
	for i := 0; i < 5; i++ {
		pid := a.waitPID(t, "pid", 10*time.Second)
		pids = append(pids, pid)
		if pid != a.pid {
			fds = append(fds, pidfdOf(t, pid))
		}
	}
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, maxAge+30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, maxAge)
	for i, fd := range fds {
		if !pidfdDead(fd, 10*time.Second) {
			t.Errorf("descendant %d survived", pids[i+1])
		}
	}
	if m["final_signal"] != "KILL" {
		t.Errorf("final signal %v, want KILL (grandchildren ignore SIGTERM)", m["final_signal"])
	}
	desc, _ := m["descendants"].([]any)
	if len(desc) != 4 {
		t.Errorf("descendants %v, want 4", desc)
	}
}

func TestIntegrationExitsEarlyAndUntouched(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String())
	early := startAgent(t, "claude", "-exit-after", "300ms")
	nonMatching := startAgent(t, "claude-not")
	notUnder := exec.Command("sleep", "1000") // matches nothing and is not ours to watch either
	if err := notUnder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notUnder.Process.Kill(); notUnder.Wait() })
	notUnderFD := pidfdOf(t, notUnder.Process.Pid)
	early.waitLine(t, "pid", 10*time.Second)
	// It was tracked (so its absence from /agents below means something).
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "agent" && num(m["pid"]) == int64(early.pid) })
	// A sentinel agent started after them: once it is killed, both other
	// processes are past their would-be deadlines too.
	sentinel := startAgent(t, "claude")
	d.waitTracked(t, sentinel.pid)
	ws := early.waitExit(t, 10*time.Second)
	m := d.waitLog(t, age+20*time.Second, killOf(sentinel.pid))
	checkKill(t, m, sentinel, age)
	if ws.ExitStatus() != 0 {
		t.Errorf("early agent exited with %v, want 0 on its own", ws)
	}
	d.noLogs(t, killOf(early.pid), "an agent that had exited was killed")
	if !nonMatching.alive() || len(d.findLogs(killOf(nonMatching.pid))) > 0 {
		t.Error("a process matching no rule was killed")
	}
	if pidfdDead(notUnderFD, 0) {
		t.Error("a sleep matching no rule died")
	}
	if n := len(d.agentsFor(t, early.pid)); n != 0 {
		t.Errorf("exited agent still listed")
	}
}

func TestIntegrationDryRun(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String(), "--dry-run")
	a := startAgent(t, "claude", "-children", "1")
	a.waitLine(t, "pid", 10*time.Second)
	child := a.waitPID(t, "pid", 10*time.Second)
	cfd := pidfdOf(t, child)
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	if m["msg"] != "would kill" || m["dry_run"] != true || m["outcome"] != "dry_run" {
		t.Errorf("dry run reported %v", m)
	}
	if desc, _ := m["descendants"].([]any); len(desc) != 1 || int(desc[0].(float64)) != child {
		t.Errorf("dry run descendants %v, want [%d]", desc, child)
	}
	// Nothing was signalled: the agent never saw SIGTERM and both live.
	if _, err := os.Stat(a.term); err == nil {
		t.Error("dry run sent SIGTERM")
	}
	if !a.alive() || pidfdDead(cfd, 0) {
		t.Error("dry run killed a process")
	}
}

func TestIntegrationSIGTERMStopsCleanly(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.exitsCleanly(t, 20*time.Second)
	d.waitLog(t, time.Second, func(m map[string]any) bool { return m["msg"] == "stopped" })
}

// TestIntegrationEventLoss forces ENOBUFS with a tiny receive buffer and a
// fork storm; agents started during the storm must all be killed on time.
func TestIntegrationEventLoss(t *testing.T) {
	needRoot(t)
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--netlink-rcvbuf", "1024")
	storm := func() *exec.Cmd {
		// Bounded: 15,000 forks, then it ends by itself.
		c := exec.Command("sh", "-c", `i=0; while [ $i -lt 15000 ]; do (:) & i=$((i+1)); done; wait`)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	s1, s2 := storm(), storm()
	var agents []*agent
	for i := 0; i < 10; i++ {
		agents = append(agents, startAgent(t, "claude"))
		time.Sleep(50 * time.Millisecond)
	}
	for _, a := range agents {
		m := d.waitLog(t, age+60*time.Second, killOf(a.pid))
		a.waitExit(t, 20*time.Second)
		checkKill(t, m, a, age)
	}
	s1.Wait()
	s2.Wait()
	var h healthView
	d.get(t, "/healthz", &h)
	if h.EventsLost == 0 || h.Overruns == 0 {
		t.Errorf("no loss counted with a %d-byte buffer under a fork storm: %+v", h.Rcvbuf, h)
	}
	if h.Resyncs == 0 {
		t.Errorf("loss without resync: %+v", h)
	}
	t.Logf("health after storm: %+v", h)
}

// TestIntegrationPIDNamespaceFallback runs the daemon in a new PID
// namespace, where the kernel ignores proc connector subscriptions: it must
// say so, poll /proc, and still kill on time.
func TestIntegrationPIDNamespaceFallback(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	const age = 3 * time.Second
	claude, term := fakeAgentShell(t, "claude")
	// Inside the namespace the shell is PID 1: everything there is ours, so
	// --under 1 scopes the daemon to this test.
	script := fmt.Sprintf(`%s & exec %s run --under 1 --listen 127.0.0.1:0 --max-age %s --poll-interval 200ms --state-dir %s --log-level debug --control-socket ''`,
		claude, supervisorBin, age, t.TempDir())
	t0 := boottime()
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script)
	d := startDaemonCmd(t, cmd)
	// unshare ignores SIGTERM while it waits; SIGKILL makes --kill-child
	// take the namespace down.
	d.stopSignal = os.Kill
	d.waitLog(t, 10*time.Second, warnHas("falling back"))
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Source != "proc" {
		t.Errorf("source %q, want proc", h.Source)
	}
	m := d.waitLog(t, age+20*time.Second, func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == "claude" })
	got, ok := readBoottime(term)
	if !ok {
		t.Fatal("agent never got SIGTERM")
	}
	if got < t0+int64(age) {
		t.Errorf("SIGTERM %s after start, before max age %s", time.Duration(got-t0), age)
	}
	deadline, signalled := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
	if signalled < deadline {
		t.Errorf("signalled before deadline")
	}
	if late := time.Duration(signalled - deadline); late > time.Second {
		t.Errorf("signalled %s late in polling mode: deadlines should stay exact", late)
	}
	if got > t0+int64(age)+int64(5*time.Second) {
		t.Errorf("SIGTERM %s after start", time.Duration(got-t0))
	}
}

// TestIntegrationForkWhileDying: agents whose SIGTERM handler forks a
// TERM-ignoring child and exits at once. The child's fork reaches the table
// just before the agent's exit; the reaper must wait for the table to catch
// up before it decides the tree is empty.
func TestIntegrationForkWhileDying(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1s")
	script := newRig(t).script(t, "claude", `#!/bin/bash
trap 'trap "" TERM; sleep 1000 & echo "child $!"; exit 0' TERM
echo "pid $$"
sleep 1000 & wait $!
`)
	const n = 10
	var runs []*agent
	for range n {
		runs = append(runs, startScript(t, script))
	}
	for _, a := range runs {
		d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	}
	for _, a := range runs {
		child := a.waitPID(t, "child", 10*time.Second)
		// Read after the kill: the child may be gone and its PID reused.
		fd := ourPidfd(child)
		if fd < 0 {
			continue // gone
		}
		if !pidfdDead(fd, 15*time.Second) {
			t.Errorf("child %d forked by dying agent %d survived", child, a.pid)
		}
		killPidfd(fd)
	}
}

// TestIntegrationShutdownFinishesKills: SIGTERM reaches the daemon while a
// kill is in flight, and a process of the tree forks a TERM-ignoring
// grandchild after that. The kill still completes, grandchild included,
// before the daemon exits: the event loop runs until in-flight kills are
// done, so the reaper learns of the late fork.
func TestIntegrationShutdownFinishesKills(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "2s")
	// On SIGTERM: a child that ignores SIGTERM, waits half a second (the
	// daemon is shutting down by then), then forks a grandchild that
	// ignores SIGTERM too; the agent itself exits at once.
	c := startScript(t, newRig(t).script(t, "claude", `#!/bin/bash
trap 'trap "" TERM; (sleep 0.5; sleep 1000 & echo "grandchild $!"; wait) & echo "child $!"; exit 0' TERM
echo "pid $$"
sleep 1000 & wait $!
`))
	c.waitLine(t, "pid", 10*time.Second)
	d.waitTracked(t, c.pid)
	child := c.waitPID(t, "child", maxAge+20*time.Second) // the agent got its SIGTERM: the kill is in flight
	d.cmd.Process.Signal(syscall.SIGTERM)
	childFD := pidfdOf(t, child)
	grandchild := c.waitPID(t, "grandchild", 10*time.Second)
	grandchildFD := pidfdOf(t, grandchild)

	d.exitsCleanly(t, 30*time.Second)
	if !pidfdDead(childFD, 0) || !pidfdDead(grandchildFD, 5*time.Second) {
		t.Error("the daemon stopped and left its in-flight kill's tree alive (the grandchild forked during shutdown survived?)")
	}
	var kill, stopped, shutting = -1, -1, -1
	d.mu.Lock()
	for i, m := range d.logs {
		switch {
		case killOf(c.pid)(m):
			kill = i
		case m["msg"] == "shutting down":
			shutting = i
		case m["msg"] == "stopped":
			stopped = i
		}
	}
	m := map[string]any{}
	if kill >= 0 {
		m = d.logs[kill]
	}
	d.mu.Unlock()
	if !(shutting >= 0 && shutting < kill && kill < stopped) {
		t.Errorf("log order: shutting down at %d, kill at %d, stopped at %d; want the kill recorded during shutdown", shutting, kill, stopped)
	}
	if m["outcome"] != "killed" {
		t.Errorf("kill outcome %v, want killed", m["outcome"])
	}
	desc, _ := m["descendants"].([]any)
	if !slices.Contains(desc, any(float64(child))) || !slices.Contains(desc, any(float64(grandchild))) {
		t.Errorf("descendants %v: the child %d and the grandchild %d forked during shutdown should be there", desc, child, grandchild)
	}
}

// leaderBin builds the helper, as "claude" so its comm is an agent's.
func leaderBin(t testing.TB) string { return buildC(t, "leader/claude", leaderC, "-pthread") }

// threadedAge is the max age of the daemon startThreaded starts.
const threadedAge = 3 * time.Second

// startThreaded starts a daemon with threadedAge as its max age, then
// runs the C helper in mode, waits for its "ready" and for the daemon to
// track it.
func startThreaded(t *testing.T, mode string) (*testDaemon, *agent, agentView) {
	t.Helper()
	d := startDaemon(t, "--max-age", threadedAge.String(), "--kill-grace", "1s")
	a := runAgent(t, exec.Command(leaderBin(t), mode))
	a.waitLine(t, "ready", 10*time.Second)
	return d, a, d.waitTracked(t, a.pid)
}

// checkThreadedKill asserts that the daemon signalled a at its deadline
// (threadedAge counted from its start, which the thread's exit or exec did
// not move), and that it did not die before. Its death is the whole thread group's:
// the exit of a leader whose threads run on is not reported to its parent
// (delay_group_leader, kernel/exit.c).
func checkThreadedKill(t *testing.T, d *testDaemon, a *agent) {
	t.Helper()
	m := d.waitLog(t, threadedAge+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, threadedAge)
	if start := num(m["start_boot_ns"]); start > a.t0+int64(500*time.Millisecond) {
		t.Errorf("pid %d: start %s after the fork: its age restarted", a.pid, time.Duration(start-a.t0))
	}
}

// An agent whose main thread called pthread_exit lives on in its other
// thread: still tracked, killed at its deadline.
func TestIntegrationLeaderThreadExit(t *testing.T) {
	if ranApart(t) {
		return
	}
	d, a, _ := startThreaded(t, "pthread-exit")
	// Wait for the leader to be a zombie: its exit event has been sent.
	waitFor(t, 10*time.Second, func() bool {
		st, _ := statField(a.pid, 0)
		return st == "Z"
	}, "the leader of %d a zombie", a.pid)
	// The daemon has read the exit event once a later event (a process
	// we start now, tracked) has been read.
	marker := startAgent(t, "claude")
	d.waitTracked(t, marker.pid)
	if len(d.agentsFor(t, a.pid)) != 1 {
		t.Fatalf("agent %d untracked after its leader thread exited", a.pid)
	}
	checkThreadedKill(t, d, a)
}

// A non-leader thread's execve: the process keeps its PID, its start and its
// deadline.
func TestIntegrationExecFromThread(t *testing.T) {
	if ranApart(t) {
		return
	}
	d, a, before := startThreaded(t, "exec-thread")
	// The start and deadline the daemon found, in boot-time nanoseconds
	// (/agents converts them to wall time at each request, which moves
	// them by however long the handler was preempted between two clocks).
	found := d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "agent" && int(num(m["pid"])) == a.pid
	})
	a.waitLine(t, "execd", 10*time.Second)
	marker := startAgent(t, "claude")
	d.waitTracked(t, marker.pid)
	if after := d.agentsFor(t, a.pid); len(after) != 1 || after[0].Reason != before.Reason {
		t.Fatalf("after a thread's exec: %+v, before %+v", after, before)
	}
	checkThreadedKill(t, d, a)
	killed := d.waitLog(t, 10*time.Second, killOf(a.pid))
	for _, k := range []string{"start_boot_ns", "deadline_boot_ns"} {
		if num(killed[k]) != num(found[k]) {
			t.Errorf("%s %v at the kill, %v when found: the exec moved it", k, killed[k], found[k])
		}
	}
}
