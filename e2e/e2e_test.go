package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every daemon here runs with --under the test process (startDaemon), so it
// can only ever kill what these tests started.

const maxAge = 2 * time.Second

func TestIntegrationAgentStartedAfterDaemon(t *testing.T) {
	needRoot(t)
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
	needRoot(t)
	const age = 4 * time.Second
	a := startAgent(t, "claude")
	a.waitLine(t, "pid", 10*time.Second)
	// Start the daemon well into the agent's life: its deadline is the
	// agent's start plus max age, not the daemon's start plus max age.
	time.Sleep(1500 * time.Millisecond)
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
	needRoot(t)
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
	needRoot(t)
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
	needRoot(t)
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
	if v := d.findLogs(func(m map[string]any) bool { return m["msg"] == "agent" && m["comm"] == "worker" }); len(v) > 0 {
		t.Errorf("a thread rename made an agent: %v", v)
	}
}

func TestIntegrationIgnoresTerm(t *testing.T) {
	needRoot(t)
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

// tokenEnv marks the environment of every process this test binary starts
// (they inherit it), so that a PID read from a process's output can be
// proven ours before anything signals it.
const tokenEnv = "SUPERVISOR_TEST_TOKEN"

var token = os.Getenv(tokenEnv)

func init() {
	if token == "" {
		token = randName("run")
		os.Setenv(tokenEnv, token)
	}
}

// ourPidfd opens a pidfd for pid, a PID the test read from a process's
// output, and proves through it that the process is ours: its environment
// holds this run's token, and the pidfd still names a live process after
// that was read, so the PID was not reused in between. It returns -1 if
// the process is gone or is not ours: such a PID is never signalled.
func ourPidfd(pid int) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	for end := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		mine := err == nil && slices.Contains(strings.Split(string(env), "\x00"), tokenEnv+"="+token)
		alive := unix.PidfdSendSignal(fd, 0, nil, 0) == nil
		switch {
		case mine && alive:
			return fd
		case alive && !mine && time.Now().Before(end):
			// In the middle of execve(2), environ reads empty or cut short
			// (a read racing the new stack's setup): read it again while
			// the process lives, within the bound.
			continue
		}
		unix.Close(fd)
		return -1
	}
}

// pidfdOf opens a pidfd for a live process of the test's that the test
// learned of from its output, so its death can be waited for even after it
// is reparented; the cleanup kills it through the pidfd, never by PID.
func pidfdOf(t testing.TB, pid int) int {
	t.Helper()
	fd := ourPidfd(pid)
	if fd < 0 {
		t.Fatalf("pid %d is gone or not started by this test", pid)
	}
	t.Cleanup(func() {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return fd
}

func pidfdDead(fd int, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	for {
		ms := int(time.Until(end).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		return n == 1
	}
}

func TestIntegrationTreeWithTermIgnoringGrandchild(t *testing.T) {
	needRoot(t)
	const grace = time.Second
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", grace.String())
	a := startAgent(t, "claude", "-children", "2", "-grandchildren", "1", "-grandchild-ignore-term")
	// The agent, 2 children, 2 grandchildren each print their pid.
	var fds []int
	var pids []int
	for i := 0; i < 5; i++ {
		f := strings.Fields(a.waitLine(t, "pid", 10*time.Second))
		pid, _ := strconv.Atoi(f[1])
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
	needRoot(t)
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
	early.waitExit(t, 10*time.Second)
	m := d.waitLog(t, age+20*time.Second, killOf(sentinel.pid))
	checkKill(t, m, sentinel, age)
	if ws := early.state.Sys().(syscall.WaitStatus); ws.ExitStatus() != 0 {
		t.Errorf("early agent exited with %v, want 0 on its own", ws)
	}
	if l := d.findLogs(killOf(early.pid)); len(l) > 0 {
		t.Errorf("an agent that had exited was killed: %v", l)
	}
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
	needRoot(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--dry-run")
	a := startAgent(t, "claude", "-children", "1")
	a.waitLine(t, "pid", 10*time.Second)
	child, _ := strconv.Atoi(strings.Fields(a.waitLine(t, "pid", 10*time.Second))[1])
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
	needRoot(t)
	d := startDaemon(t, "--max-age", "1h")
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("exit %v, want 0", d.cmd.ProcessState)
	}
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
	needRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare (util-linux) is needed: ", err)
	}
	const age = 3 * time.Second
	dir := t.TempDir()
	self, _ := os.Executable()
	claude := filepath.Join(dir, "claude")
	os.Symlink(self, claude)
	term := filepath.Join(dir, "term")
	// Inside the namespace the shell is PID 1: everything there is ours, so
	// --under 1 scopes the daemon to this test.
	script := fmt.Sprintf(`%s=1 %s -term-file %s & exec %s run --under 1 --listen 127.0.0.1:0 --max-age %s --poll-interval 200ms --state-dir %s --log-level debug --control-socket ''`,
		agentEnv, claude, term, supervisorBin, age, dir)
	t0 := boottime()
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script)
	d := startDaemonCmd(t, cmd)
	// unshare ignores SIGTERM while it waits; SIGKILL makes --kill-child
	// take the namespace down.
	d.stopSignal = os.Kill
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["level"] == "warn" && strings.Contains(fmt.Sprint(m["msg"]), "falling back")
	})
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Source != "proc" {
		t.Errorf("source %q, want proc", h.Source)
	}
	m := d.waitLog(t, age+20*time.Second, func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == "claude" })
	b, err := os.ReadFile(term)
	if err != nil {
		t.Fatalf("agent never got SIGTERM: %v", err)
	}
	got, _ := strconv.ParseInt(string(b), 10, 64)
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
	needRoot(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1s")
	dir := t.TempDir()
	script := filepath.Join(dir, "claude")
	os.WriteFile(script, []byte(`#!/bin/bash
trap 'trap "" TERM; sleep 1000 & echo "child $!"; exit 0' TERM
echo "pid $$"
sleep 1000 & wait $!
`), 0o755)
	const n = 10
	type run struct {
		cmd   *exec.Cmd
		lines chan string
	}
	var runs []run
	for range n {
		c := exec.Command(script)
		out, _ := c.StdoutPipe()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		lines := make(chan string, 4)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		runs = append(runs, run{c, lines})
	}
	for _, r := range runs {
		d.waitLog(t, maxAge+20*time.Second, killOf(r.cmd.Process.Pid))
	}
	for _, r := range runs {
		// Not until the pipe closes: a surviving child holds it open.
		var child int
		timeout := time.After(10 * time.Second)
	read:
		for {
			select {
			case l, ok := <-r.lines:
				if !ok {
					break read
				}
				if f := strings.Fields(l); len(f) == 2 && f[0] == "child" {
					child, _ = strconv.Atoi(f[1])
					break read
				}
			case <-timeout:
				break read
			}
		}
		if child == 0 {
			t.Fatalf("agent %d printed no child", r.cmd.Process.Pid)
		}
		// Read after the kill: the child may be gone and its PID reused.
		fd := ourPidfd(child)
		if fd < 0 {
			continue // gone
		}
		if !pidfdDead(fd, 15*time.Second) {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			t.Errorf("child %d forked by dying agent %d survived", child, r.cmd.Process.Pid)
		}
		unix.Close(fd)
	}
}

// TestIntegrationShutdownFinishesKills: SIGTERM reaches the daemon while a
// kill is in flight, and a process of the tree forks a TERM-ignoring
// grandchild after that. The kill still completes, grandchild included,
// before the daemon exits: the event loop runs until in-flight kills are
// done, so the reaper learns of the late fork.
func TestIntegrationShutdownFinishesKills(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "2s")
	script := filepath.Join(t.TempDir(), "claude")
	// On SIGTERM: a child that ignores SIGTERM, waits half a second (the
	// daemon is shutting down by then), then forks a grandchild that
	// ignores SIGTERM too; the agent itself exits at once.
	os.WriteFile(script, []byte(`#!/bin/bash
trap 'trap "" TERM; (sleep 0.5; sleep 1000 & echo "grandchild $!"; wait) & echo "child $!"; exit 0' TERM
echo "pid $$"
sleep 1000 & wait $!
`), 0o755)
	c := exec.Command(script)
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(prefix string, timeout time.Duration) int {
		t.Helper()
		tm := time.After(timeout)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("no %q line: output closed", prefix)
				}
				if f := strings.Fields(l); len(f) == 2 && f[0] == prefix {
					n, _ := strconv.Atoi(f[1])
					return n
				}
			case <-tm:
				t.Fatalf("no %q line within %s", prefix, timeout)
			}
		}
	}
	next("pid", 10*time.Second)
	d.waitTracked(t, c.Process.Pid)
	child := next("child", maxAge+20*time.Second) // the agent got its SIGTERM: the kill is in flight
	d.cmd.Process.Signal(syscall.SIGTERM)
	childFD := pidfdOf(t, child)
	grandchild := next("grandchild", 10*time.Second)
	grandchildFD := pidfdOf(t, grandchild)

	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30s of SIGTERM")
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("exit %v, want 0", d.cmd.ProcessState)
	}
	if !pidfdDead(childFD, 0) || !pidfdDead(grandchildFD, 5*time.Second) {
		t.Error("the daemon stopped and left its in-flight kill's tree alive (the grandchild forked during shutdown survived?)")
	}
	var kill, stopped, shutting = -1, -1, -1
	d.mu.Lock()
	for i, m := range d.logs {
		switch {
		case killOf(c.Process.Pid)(m):
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
