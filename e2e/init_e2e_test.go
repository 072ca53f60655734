package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests of `supervisor init`, the entrypoint mode: as PID 1 of a fresh PID
// namespace (`unshare --pid --fork --mount-proc`, as in a container without
// an init) and as a child subreaper outside one. Everything they signal is
// inside the namespace, or a descendant of the init they started.

// initHelper builds the init helper.
func initHelper(t testing.TB) string { return buildC(t, "inithelper", initHelperC) }

// initArgs are the flags every test init gets: nothing outside the test,
// no endpoint, no database, and agent rules no real process matches.
func initArgs(t testing.TB, extra ...string) []string {
	return append([]string{"init", "--state-dir", t.TempDir(), "--listen", "", "--control-socket", "",
		"--log-level", "debug", "--agent", "init-none"}, extra...)
}

// initRun is one `supervisor init` started by a test: in a fresh PID
// namespace (through unshare, whose child it is) or directly, as the test's
// child. CMD shares its stdout and stderr: the test reads CMD's lines from
// stdout and the daemon's JSON logs (and CMD's stderr) from stderr.
type initRun struct {
	*logStream           // init's log (and CMD's stderr)
	out        *output   // CMD's stdout
	cmd        *exec.Cmd // unshare, or init itself
	ns         bool
	pid        int // init's PID here
	pidfd      int // a pidfd of init, for signals
	done       chan struct{}
	exitedAt   int64 // CLOCK_BOOTTIME when Wait returned
}

// startInit runs supervisor with args (beginning with "init") and
// `-- sh -c script`, in a fresh PID namespace when ns is set.
func startInit(t testing.TB, ns bool, args []string, script string) *initRun {
	t.Helper()
	argv := append(append([]string{supervisorBin}, args...), "--", "sh", "-c", script)
	return startInitArgv(t, ns, argv, supervisorBin)
}

// startInitArgv runs argv (in a fresh PID namespace when ns is set). When
// exe is set, argv runs an init whose executable is exe: its PID and a
// pidfd are found.
func startInitArgv(t testing.TB, ns bool, argv []string, exe string) *initRun {
	t.Helper()
	if ns {
		// --kill-child: if unshare dies (the cleanup SIGKILLs it), so does
		// its child, PID 1 of the namespace, and with it the whole
		// namespace (kernel/pid_namespace.c, zap_pid_ns_processes).
		argv = append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}, argv...)
	}
	r := &initRun{logStream: newLogStream(), ns: ns, pidfd: -1, done: make(chan struct{})}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	// Files, not exec's copying pipes: Wait must not wait for leftovers
	// that inherited them.
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = outW, errW
	err = r.cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	r.out = readOutput(outR)
	go func() {
		defer errR.Close()
		r.read(errR)
	}()
	go func() {
		r.cmd.Wait()
		r.exitedAt = boottime()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.stop(t)
		// The pipes end once every holder is gone; in a namespace that is
		// when init is, outside only if init cleaned up.
		timeout := time.After(5 * time.Second)
		for _, ended := range []chan struct{}{r.out.ended, r.ended} {
			select {
			case <-ended:
			case <-timeout:
				t.Errorf("CMD's stdout or stderr still open 5s after init exited: a descendant outlived init")
			}
		}
		if races := r.findLogs(func(m map[string]any) bool {
			s, _ := m["line"].(string)
			return strings.Contains(s, "DATA RACE")
		}); len(races) > 0 {
			t.Error("the race detector found a data race in init; see its stderr")
		}
		if t.Failed() {
			r.dump(t, "init")
			r.out.mu.Lock()
			for _, l := range r.out.lines {
				t.Logf("stdout: %s", l.text)
			}
			r.out.mu.Unlock()
		}
		if r.pidfd >= 0 {
			unix.Close(r.pidfd)
		}
	})
	if exe != "" {
		r.findInit(t, exe)
	}
	return r
}

// findInit opens a pidfd for init. Outside a namespace it is our child;
// inside, unshare's only child, read from unshare's children list
// (/proc/PID/task/TID/children) and proved by its parent after the pidfd
// is open: unshare forks once, so a process whose parent is unshare is
// init (and unshare, our unreaped child, keeps its PID).
func (r *initRun) findInit(t testing.TB, exe string) {
	t.Helper()
	if !r.ns {
		r.pid = r.cmd.Process.Pid
		fd, err := unix.PidfdOpen(r.pid, 0)
		if err != nil {
			t.Fatalf("pidfd of init %d: %v", r.pid, err)
		}
		r.pidfd = fd
		return
	}
	u := r.cmd.Process.Pid
	var pid int
	waitFor(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", u, u))
		f := strings.Fields(string(b))
		if len(f) > 0 {
			pid, _ = strconv.Atoi(f[0])
		}
		return len(f) > 0
	}, "unshare %d started no child", u)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd of init %d: %v", pid, err)
	}
	r.pidfd = fd // closed at cleanup
	if ppid, _ := statField(pid, 1); ppid != strconv.Itoa(u) {
		t.Fatalf("init %d: parent %q, not unshare %d", pid, ppid, u)
	}
	// Wait for the exec: until then the child is unshare itself.
	bin, _ := filepath.EvalSymlinks(exe)
	waitFor(t, 10*time.Second, func() bool {
		if pidfdDead(fd, 0) {
			t.Fatalf("unshare's child %d exited before it became %s", pid, exe)
		}
		now, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return now == bin
	}, "unshare's child %d never became %s", pid, exe)
	r.pid = pid
	// It is PID 1 there: the last NSpid of its status.
	if f := strings.Fields(procStatus(pid, "NSpid")); len(f) != 2 || f[1] != "1" {
		t.Fatalf("init %d: NSpid %q, want PID 1 of a child namespace", pid, f)
	}
}

// signal sends sig to init through its pidfd.
func (r *initRun) signal(t testing.TB, sig unix.Signal) {
	t.Helper()
	if err := unix.PidfdSendSignal(r.pidfd, sig, nil, 0); err != nil {
		t.Fatalf("signal %v to init %d: %v", sig, r.pid, err)
	}
}

// stop ends a run the test left running: in a namespace SIGKILL to
// unshare takes it all down; outside, SIGTERM to init (forwarded to CMD,
// whose end makes init clean up), SIGKILL after 15s.
func (r *initRun) stop(t testing.TB) {
	select {
	case <-r.done:
		return
	default:
	}
	if r.ns || r.pidfd < 0 {
		r.cmd.Process.Kill()
		<-r.done
		return
	}
	unix.PidfdSendSignal(r.pidfd, unix.SIGTERM, nil, 0)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		t.Errorf("init did not exit within 15s of SIGTERM")
	}
}

// waitOut waits for a line of CMD's stdout starting with prefix that no
// earlier waitOut returned, and returns it.
func (r *initRun) waitOut(t testing.TB, timeout time.Duration, prefix string) outLine {
	t.Helper()
	timeout = patient(timeout)
	l, ok := r.out.take(prefix, timeout)
	if !ok {
		t.Fatalf("no %q line from CMD within %s", prefix, timeout)
	}
	return l
}

// wait waits for init (through unshare in a namespace) to exit and
// returns its exit status.
func (r *initRun) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timeout = patient(timeout)
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("init still running after %s", timeout)
	}
	st := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if st.Signaled() {
		// unshare dies of the signal its child died of.
		t.Fatalf("init died of signal %v: it must exit with a status", st.Signal())
	}
	return st.ExitStatus()
}

// zombieLine parses the helper's "zombies ALL init INIT orphans LIVE waited_ms W".
func zombieLine(t testing.TB, l string) (all, init, live int) {
	t.Helper()
	var waited int
	if _, err := fmt.Sscanf(l, "zombies %d init %d orphans %d waited_ms %d", &all, &init, &live, &waited); err != nil {
		t.Fatalf("helper line %q: %v", l, err)
	}
	return
}

// TestIntegrationInitReapsOrphans: in a fresh PID namespace, 30 orphans
// made by `(sleep 0.2 &)` are reparented to init, PID 1, and reaped: once
// they have all exited, no zombie is left. The control run shows the check
// can fail: a PID 1 that does not reap keeps every one of them as a zombie
// (KERNEL-NOTES: 24 left 1.5 s later).
func TestIntegrationInitReapsOrphans(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	h := initHelper(t)
	script := fmt.Sprintf(`i=0; while [ $i -lt 30 ]; do (sleep 0.2 &); i=$((i+1)); done; echo made; %s zombies %%d sleep`, h)
	t.Run("init", func(t *testing.T) {
		r := startInit(t, true, initArgs(t), fmt.Sprintf(script, 10000))
		r.waitOut(t, 20*time.Second, "made")
		all, init, live := zombieLine(t, r.waitOut(t, 20*time.Second, "zombies").text)
		if all != 0 || init != 0 || live != 0 {
			t.Errorf("after the orphans exited: %d zombies in the namespace (%d of PID 1), %d orphans still alive; want none", all, init, live)
		}
		if st := r.wait(t, 15*time.Second); st != 0 {
			t.Errorf("exit status %d, want CMD's 0", st)
		}
	})
	t.Run("control: PID 1 that does not reap", func(t *testing.T) {
		// The script runs in the background and PID 1 becomes sleep.
		argv := []string{"sh", "-c", fmt.Sprintf(`sh -c '%s' & exec sleep 60`, fmt.Sprintf(script, 1500))}
		r := startInitArgv(t, true, argv, "")
		_, init, _ := zombieLine(t, r.waitOut(t, 20*time.Second, "zombies").text)
		if init < 20 {
			t.Errorf("a non-reaping PID 1 holds %d zombies; expected nearly 30: the check would not catch a non-reaping init", init)
		}
	})
}

// TestIntegrationInitAgentDeadline: an agent inside the namespace, found by
// polling /proc (the proc connector ignores a non-initial PID namespace),
// is killed at its start + max age and never before, by its own record of
// SIGTERM against its start time as the kernel shows it.
func TestIntegrationInitAgentDeadline(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	const age = 2 * time.Second
	const name = "initagent" // a comm is at most 15 bytes
	agent, term := fakeAgentShell(t, name)
	args := initArgs(t, "--agent", name, "--max-age", age.String(), "--kill-grace", "1s")
	script := fmt.Sprintf(`%s & a=$!; echo "agentstat $(cat /proc/$a/stat)"; wait $a; echo "agent-exit $?"`, agent)
	r := startInit(t, true, args, script)
	// The agent started in [lo, hi), the kernel says.
	lo, hi := startRange(t, r.waitOut(t, 20*time.Second, "agentstat ").text)
	exit := r.waitOut(t, age+20*time.Second, "agent-exit ").text
	if exit != "agent-exit 143" {
		t.Errorf("%s: want 143, the fake agent's exit on SIGTERM", exit)
	}
	b, err := os.ReadFile(term)
	if err != nil {
		t.Fatalf("the agent recorded no SIGTERM: %v", err)
	}
	got, _ := strconv.ParseInt(string(b), 10, 64)
	if got < lo+int64(age) {
		t.Errorf("SIGTERM %s before the earliest possible deadline (start + max age)", time.Duration(lo+int64(age)-got))
	}
	if late := time.Duration(got - (hi + int64(age))); late > 1500*time.Millisecond {
		t.Errorf("SIGTERM %s after the latest possible deadline: polling finds it well before, the deadline is exact", late)
	}
	m := r.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == name })
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if signalled < deadline || deadline < start+int64(age) || start < lo {
		t.Errorf("kill record: start %d (kernel: from %d), deadline %d, signalled %d: early", start, lo, deadline, signalled)
	}
	if st := r.wait(t, 15*time.Second); st != 0 {
		t.Errorf("exit status %d, want CMD's 0", st)
	}
	t.Logf("SIGTERM %s after the agent's start (max age %s)", time.Duration(got-lo), age)
}

// TestIntegrationInitExitStatus: init exits with CMD's status, and 128 + n
// when CMD dies of signal n, as a shell reports it.
func TestIntegrationInitExitStatus(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	for _, c := range []struct {
		script string
		want   int
	}{
		{"exit 3", 3},
		{"kill -KILL $$", 128 + 9},
		{"kill -TERM $$", 128 + 15},
		{"exit 0", 0},
	} {
		t.Run(c.script, func(t *testing.T) {
			r := startInit(t, true, initArgs(t), c.script)
			if st := r.wait(t, 30*time.Second); st != c.want {
				t.Errorf("init exited %d, want %d", st, c.want)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		// CMD has init's stdin: the status it reads comes back.
		argv := append(append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child", supervisorBin}, initArgs(t)...),
			"--", "sh", "-c", "read s; exit $s")
		c := exec.Command(argv[0], argv[1:]...)
		c.Stdin = strings.NewReader("7\n")
		done := make(chan error, 1)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- c.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
			t.Fatal("init did not exit within 30s")
		}
		if st := c.ProcessState.ExitCode(); st != 7 {
			t.Errorf("init exited %d, want 7, read by CMD from stdin", st)
		}
	})
}

// TestIntegrationInitForwardsSignals: every signal init forwards reaches
// CMD (its trap prints it, and the test sends the next only then), and
// SIGTERM's trap exit status comes back. The signals go to init through a
// pidfd.
func TestIntegrationInitForwardsSignals(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	sigs := []struct {
		name string
		sig  unix.Signal
	}{{"INT", unix.SIGINT}, {"HUP", unix.SIGHUP}, {"QUIT", unix.SIGQUIT}, {"USR1", unix.SIGUSR1},
		{"USR2", unix.SIGUSR2}, {"WINCH", unix.SIGWINCH}}
	var traps strings.Builder
	for _, s := range sigs {
		fmt.Fprintf(&traps, `trap 'echo got-%s' %s; `, s.name, s.name)
	}
	// A short sleep loop: dash runs a trap once the foreground command is done.
	script := traps.String() + `trap 'echo got-TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done`
	r := startInit(t, true, initArgs(t), script)
	r.waitOut(t, 20*time.Second, "ready")
	for _, s := range sigs {
		r.signal(t, s.sig)
		r.waitOut(t, 10*time.Second, "got-"+s.name)
	}
	r.signal(t, unix.SIGTERM)
	r.waitOut(t, 10*time.Second, "got-TERM")
	if st := r.wait(t, 15*time.Second); st != 42 {
		t.Errorf("init exited %d, want 42 from CMD's TERM trap", st)
	}
}

// TestIntegrationInitForwardToGroup: with --forward-to group a signal
// reaches CMD's whole process group, its children too; by default only
// CMD.
func TestIntegrationInitForwardToGroup(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	// The child is a background job of a non-interactive shell: same
	// process group as CMD, which init put in a group of its own.
	script := `trap 'echo parent-usr1' USR1; trap 'echo parent-term; kill $cp 2>/dev/null; exit 0' TERM
sh -c 'trap "echo child-usr1" USR1; echo child-ready; while :; do sleep 0.05; done' & cp=$!
echo parent-ready; while :; do sleep 0.05; done`
	for _, mode := range []string{"group", "child"} {
		t.Run(mode, func(t *testing.T) {
			r := startInit(t, true, initArgs(t, "--forward-to", mode), script)
			r.waitOut(t, 20*time.Second, "parent-ready")
			r.waitOut(t, 20*time.Second, "child-ready")
			r.signal(t, unix.SIGUSR1)
			r.waitOut(t, 10*time.Second, "parent-usr1")
			if mode == "group" {
				r.waitOut(t, 10*time.Second, "child-usr1")
			} else if _, ok := r.out.take("child-usr1", 500*time.Millisecond); ok {
				t.Errorf("--forward-to child: CMD's child got the signal too")
			}
			r.signal(t, unix.SIGTERM)
			if st := r.wait(t, 15*time.Second); st != 0 {
				t.Errorf("init exited %d, want 0", st)
			}
		})
	}
}

// TestIntegrationInitTerminatesLeftovers: when CMD exits, init sends
// SIGTERM to every other process in the namespace (a trap records it),
// SIGKILL after --kill-grace to one that ignores SIGTERM, and exits with
// CMD's status no sooner than the grace and promptly after it.
func TestIntegrationInitTerminatesLeftovers(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	const grace = time.Second
	dir := t.TempDir()
	rec, goFile := filepath.Join(dir, "rec"), filepath.Join(dir, "go")
	script := fmt.Sprintf(`sh -c 'trap "echo leftover-term >> %s; exit 0" TERM; echo polite $$; sleep 1000 & wait' &
sh -c 'trap "" TERM; echo stubborn $$; exec sleep 1000' &
while [ ! -e %s ]; do sleep 0.02; done; read up _ < /proc/uptime; echo "exiting $up"; exit 5`, rec, goFile)
	r := startInit(t, true, initArgs(t, "--kill-grace", grace.String()), script)
	r.waitOut(t, 20*time.Second, "polite")
	r.waitOut(t, 20*time.Second, "stubborn")
	os.WriteFile(goFile, nil, 0o644)
	l := r.waitOut(t, 10*time.Second, "exiting ")
	// /proc/uptime is CLOCK_BOOTTIME to 10 ms (fs/proc/uptime.c).
	up, err := strconv.ParseFloat(strings.TrimPrefix(l.text, "exiting "), 64)
	if err != nil {
		t.Fatalf("%q: %v", l.text, err)
	}
	cmdExit := int64(up*1e9) + int64(10*time.Millisecond)
	st := r.wait(t, grace+20*time.Second)
	if st != 5 {
		t.Errorf("init exited %d, want CMD's 5", st)
	}
	took := time.Duration(r.exitedAt - cmdExit)
	if took > grace+3*time.Second {
		t.Errorf("init exited %s after CMD: not promptly (grace %s)", took, grace)
	}
	if took < grace-20*time.Millisecond {
		t.Errorf("init exited %s after CMD, before --kill-grace %s, though a process ignoring SIGTERM was left", took, grace)
	}
	if b, _ := os.ReadFile(rec); !strings.Contains(string(b), "leftover-term") {
		t.Errorf("the leftover never got SIGTERM from init (its trap wrote %q)", b)
	}
	t.Logf("init exited %s after CMD", took)
}

// TestIntegrationInitSubreaper: init run directly, not PID 1, makes itself
// a child subreaper: the orphans CMD makes by double forks are reparented
// to it and reaped (none is ever left a zombie under it), and one still
// alive when CMD exits is terminated.
func TestIntegrationInitSubreaper(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go")
	args := initArgs(t, "--under", strconv.Itoa(os.Getpid()), "--kill-grace", "1s")
	script := fmt.Sprintf(`echo "cmd $$"; i=0; while [ $i -lt 20 ]; do (sleep 0.2 &); i=$((i+1)); done
sh -c 'sleep 1000 </dev/null >/dev/null 2>&1 & echo "orphan $!"'
while [ ! -e %s ]; do sleep 0.02; done; exit 7`, goFile)
	t0 := boottime()
	r := startInit(t, false, args, script)
	cmdPID, _ := strconv.Atoi(strings.Fields(r.waitOut(t, 20*time.Second, "cmd ").text)[1])
	orphan, _ := strconv.Atoi(strings.Fields(r.waitOut(t, 20*time.Second, "orphan ").text)[1])
	ofd := pidfdOf(t, orphan) // ours: it carries this run's token
	// `$!` is the forked child, which may still be sh for a moment before
	// it execs sleep: wait for the exec, bounded.
	waitFor(t, 10*time.Second, func() bool { return procComm(orphan) == "sleep" }, "orphan %d our sleep", orphan)
	// Wait until init's children are CMD and the long orphan, none a
	// zombie: the 20 short orphans came to it, exited and were reaped.
	var kids map[int]string
	waitFor(t, 15*time.Second, func() bool {
		kids = childrenOf(r.pid)
		ok := len(kids) == 2 && kids[cmdPID] != "" && kids[orphan] != ""
		for _, st := range kids {
			ok = ok && st != "Z"
		}
		return ok
	}, "init's children %v (pid: state) only CMD %d and orphan %d, no zombie", &kids, cmdPID, orphan)
	if ppid, _ := statField(orphan, 1); ppid != strconv.Itoa(r.pid) {
		t.Fatalf("the orphan's parent is %s, not init %d: init is no subreaper", ppid, r.pid)
	}
	os.WriteFile(goFile, nil, 0o644)
	if st := r.wait(t, 20*time.Second); st != 7 {
		t.Errorf("init exited %d, want CMD's 7", st)
	}
	if !pidfdDead(ofd, 0) {
		t.Errorf("the double-forked orphan outlived init: CMD's exit must terminate every descendant")
	}
	if took := time.Duration(r.exitedAt - t0); took > 30*time.Second {
		t.Errorf("init took %s", took)
	}
}

// TestIntegrationInitStorm: 1,000 short-lived orphans made while signals
// are forwarded. CMD acknowledges each SIGUSR1 before the test sends the
// next (so none may coalesce with another pending one): every one must
// arrive, and once the storm is over no zombie is left.
func TestIntegrationInitStorm(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	h := initHelper(t)
	const orphans, rate = 1000, 500 // two seconds of storm
	script := fmt.Sprintf(`n=0; stop=0; trap 'n=$((n+1)); echo "ack $n"' USR1; trap 'stop=1' USR2
(%s orphans %d %d; echo storm-done) &
sleep 1000 & sp=$!
echo ready
while [ $stop = 0 ]; do wait $sp; done; kill $sp
%s zombies 10000 %s; echo "final $n"`, h, orphans, rate, h, filepath.Base(h))
	r := startInit(t, true, initArgs(t), script)
	r.waitOut(t, 20*time.Second, "ready")
	sent, during := 0, 0
	for {
		stormOver := r.out.has("storm-done")
		if stormOver && sent >= 100 {
			break
		}
		if sent >= 100000 {
			t.Fatal("the storm never ended")
		}
		r.signal(t, unix.SIGUSR1)
		sent++
		if !stormOver {
			during++
		}
		if _, ok := r.out.take(fmt.Sprintf("ack %d", sent), 10*time.Second); !ok {
			t.Fatalf("SIGUSR1 #%d never reached CMD (%d sent during the storm)", sent, during)
		}
	}
	if l := r.waitOut(t, 5*time.Second, "orphans ").text; !strings.HasPrefix(l, fmt.Sprintf("orphans %d ", orphans)) {
		t.Errorf("helper: %q", l)
	}
	r.signal(t, unix.SIGUSR2)
	_, init, live := zombieLine(t, r.waitOut(t, 20*time.Second, "zombies").text)
	if init != 0 || live != 0 {
		t.Errorf("after the storm: %d zombies of init, %d orphans alive", init, live)
	}
	final := r.waitOut(t, 5*time.Second, "final ").text
	if final != fmt.Sprintf("final %d", sent) {
		t.Errorf("%s: CMD counted that many SIGUSR1, the test sent %d", final, sent)
	}
	if st := r.wait(t, 15*time.Second); st != 0 {
		t.Errorf("init exited %d, want 0", st)
	}
	if during < 20 {
		t.Errorf("only %d signals went out during the storm: the test did not test forwarding under it", during)
	}
	t.Logf("%d SIGUSR1 forwarded and acknowledged, %d during the storm of %d orphans", sent, during, orphans)
}

// In a new PID namespace whose /proc is still the host's (unshare --pid
// without --mount-proc), PIDs in /proc name other processes than the same
// PIDs do for us: `run` refuses to start, naming the cause, and `init`
// keeps being CMD's init without the supervisor (CMD's status comes back),
// so nothing is ever matched or signalled by a foreign PID.
func TestIntegrationForeignProcRefused(t *testing.T) {
	if ranApart(t, needUnshare) {
		return
	}
	dir := t.TempDir()
	// Without the check `run` would scan the host's processes and run on:
	// the deadline turns that into a failure, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := []string{"--dry-run", "--listen", "", "--control-socket", "", "--state-dir", dir, "--agent", "foreign-agent"}

	out, err := exec.CommandContext(ctx, "unshare", append([]string{"--pid", "--fork", supervisorBin, "run"}, common...)...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "belongs to another PID namespace") {
		t.Errorf("run with a foreign /proc: %v\n%s\nwant exit 1 naming the foreign /proc", err, out)
	}

	out, err = exec.CommandContext(ctx, "unshare", append(append([]string{"--pid", "--fork", supervisorBin, "init"}, common...), "--", "sh", "-c", "exit 4")...).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("init with a foreign /proc: %v, want CMD's status 4\n%s", err, out)
	}
	if !strings.Contains(string(out), "belongs to another PID namespace") || strings.Contains(string(out), `"msg":"initial scan"`) {
		t.Errorf("init with a foreign /proc scanned it, or did not say why it did not:\n%s", out)
	}
}
