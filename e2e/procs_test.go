package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"golang.org/x/sys/unix"
)

// The processes the tests start: agents (the fake agent, scripts, C
// helpers), the pidfds that follow what they start, and what /proc says of
// them.

func boottime() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// outLine is a line a process printed, and when the test read it.
type outLine struct {
	text string
	at   int64 // CLOCK_BOOTTIME
}

// output is a process's stdout, a line at a time as it prints them. A
// wait takes the first line not taken yet that it asks for, and leaves
// the others to later waits.
type output struct {
	mu    sync.Mutex
	cond  *sync.Cond
	lines []outLine
	taken []bool
	eof   bool
	ended chan struct{} // closed at EOF: every holder of the pipe closed it
}

// readOutput reads the pipe r until EOF, then closes it.
func readOutput(r io.ReadCloser) *output {
	o := &output{ended: make(chan struct{})}
	o.cond = sync.NewCond(&o.mu)
	go func() {
		defer close(o.ended)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			o.mu.Lock()
			o.lines = append(o.lines, outLine{sc.Text(), boottime()})
			o.taken = append(o.taken, false)
			o.cond.Broadcast()
			o.mu.Unlock()
		}
		o.mu.Lock()
		o.eof = true
		o.cond.Broadcast()
		o.mu.Unlock()
	}()
	return o
}

// take returns the first line not taken yet that starts with prefix and
// marks it taken, waiting up to timeout for it.
func (o *output) take(prefix string, timeout time.Duration) (outLine, bool) {
	return o.takeFunc(func(l string) bool { return strings.HasPrefix(l, prefix) }, timeout)
}

// takeFunc is take for the first line match accepts.
func (o *output) takeFunc(match func(string) bool, timeout time.Duration) (outLine, bool) {
	timer := time.AfterFunc(timeout, func() {
		o.mu.Lock()
		o.cond.Broadcast()
		o.mu.Unlock()
	})
	defer timer.Stop()
	end := time.Now().Add(timeout)
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		for i, l := range o.lines {
			if !o.taken[i] && match(l.text) {
				o.taken[i] = true
				return l, true
			}
		}
		if o.eof || time.Now().After(end) {
			return outLine{}, false
		}
		o.cond.Wait()
	}
}

// matching returns every line so far that starts with prefix, taken or
// not.
func (o *output) matching(prefix string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, l := range o.lines {
		if strings.HasPrefix(l.text, prefix) {
			out = append(out, l.text)
		}
	}
	return out
}

// has says whether a line starting with prefix came so far.
func (o *output) has(prefix string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.ContainsFunc(o.lines, func(l outLine) bool { return strings.HasPrefix(l.text, prefix) })
}

// agent is a process a test started and waits on: a fake agent, a script,
// a helper.
type agent struct {
	cmd    *exec.Cmd
	pid    int
	t0     int64 // CLOCK_BOOTTIME just before fork: no later than its start
	out    *output
	done   chan struct{}
	exited int64 // CLOCK_BOOTTIME when Wait returned
	state  *os.ProcessState
	term   string // where it records when SIGTERM came (fake agents), or ""
}

// runAgent starts cmd with its stdout read by the test, and kills it at
// cleanup. Its stdout is a pipe of the test's, not exec's copying one:
// Wait does not wait for what the process left behind holding it, nor
// cut short what it printed before it exited.
func runAgent(t testing.TB, cmd *exec.Cmd) *agent {
	t.Helper()
	a := &agent{cmd: cmd, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = outW
	a.t0 = boottime()
	err = cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		t.Fatal(err)
	}
	a.pid = cmd.Process.Pid
	a.out = readOutput(outR)
	go func() {
		cmd.Wait()
		a.exited = boottime()
		a.state = cmd.ProcessState
		close(a.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-a.done
	})
	return a
}

// selfAs makes a symlink named comm to the test binary in a fresh
// directory: run through it, the binary's comm is comm.
func selfAs(t testing.TB, comm string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return linkAs(t, self, comm)
}

// linkAs makes a symlink named comm to the program target in a fresh
// directory.
func linkAs(t testing.TB, target, comm string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), comm)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAgent runs the fake agent (modes_test.go) under the name comm with
// the agent flags args. Unless it ignores SIGTERM it records when SIGTERM
// came (termTime), then exits 143.
func startAgent(t testing.TB, comm string, args ...string) *agent {
	t.Helper()
	return startAgentEnv(t, comm, nil, args...)
}

// startAgentEnv is startAgent with env added to the agent's environment.
func startAgentEnv(t testing.TB, comm string, env []string, args ...string) *agent {
	t.Helper()
	path := selfAs(t, comm)
	term := filepath.Join(filepath.Dir(path), "term")
	if !slices.Contains(args, "-ignore-term") {
		args = append([]string{"-term-file", term}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(append(os.Environ(), agentEnv+"=1"), env...)
	a := runAgent(t, cmd)
	a.term = term
	return a
}

// fakeAgentShell is a shell command running the fake agent as comm,
// recording SIGTERM in the file term: for a script the test starts, in a
// namespace or a session of its own, to start the agent.
func fakeAgentShell(t testing.TB, comm string) (cmd, term string) {
	t.Helper()
	exe := selfAs(t, comm)
	term = filepath.Join(filepath.Dir(exe), "term")
	return fmt.Sprintf("%s=1 %s -term-file %s", agentEnv, exe, term), term
}

// startScript runs an executable script as an agent (its comm is the
// script's name).
func startScript(t testing.TB, path string) *agent {
	t.Helper()
	return runAgent(t, exec.Command(path))
}

// waitLine waits for a line of the agent's output (its process tree's)
// starting with prefix, and returns it.
func (a *agent) waitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	timeout = patient(timeout)
	l, ok := a.out.take(prefix, timeout)
	if !ok {
		t.Fatalf("process %d: no %q line within %s", a.pid, prefix, timeout)
	}
	return l.text
}

// waitPID waits for a line "PREFIX PID ..." and returns the PID.
func (a *agent) waitPID(t testing.TB, prefix string, timeout time.Duration) int {
	t.Helper()
	l := a.waitLine(t, prefix+" ", timeout)
	pid, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(l, prefix+" "))[0])
	if err != nil {
		t.Fatalf("process %d: %q: %v", a.pid, l, err)
	}
	return pid
}

// children reads the "child PID LABEL" lines of the agent's spawned
// children until every label is seen, and opens a pidfd for each: from
// then on the test can wait for them and check on them wherever the kernel
// reparents them, and the cleanup kills them through the pidfd.
func (a *agent) children(t testing.TB, labels ...string) (pids, fds map[string]int) {
	t.Helper()
	pids, fds = map[string]int{}, map[string]int{}
	// Generous: a child that holds memory prints once it touched it all,
	// which took over 20 s on a 2-core machine at a load of 24.
	end := time.Now().Add(90 * time.Second)
	for len(pids) < len(labels) {
		// In the order they come: a pidfd is opened as soon as the test
		// knows the PID.
		l, ok := a.out.takeFunc(func(l string) bool {
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "child" || !slices.Contains(labels, f[2]) {
				return false
			}
			_, seen := pids[f[2]]
			return !seen
		}, time.Until(end))
		if !ok {
			t.Fatalf("agent %d: children %v printed, want %v", a.pid, pids, labels)
		}
		f := strings.Fields(l.text)
		pids[f[2]], _ = strconv.Atoi(f[1])
		fds[f[2]] = pidfdOf(t, pids[f[2]])
	}
	return pids, fds
}

// waitExit waits for the process to die and returns how it died.
func (a *agent) waitExit(t testing.TB, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	timeout = patient(timeout)
	select {
	case <-a.done:
		return a.state.Sys().(syscall.WaitStatus)
	case <-time.After(timeout):
		t.Fatalf("process %d still alive after %s", a.pid, timeout)
	}
	return 0
}

func (a *agent) alive() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// termAt is when the fake agent recorded SIGTERM (CLOCK_BOOTTIME ns), and
// whether it did.
func (a *agent) termAt() (int64, bool) {
	return readBoottime(a.term)
}

// termTime is when the agent received SIGTERM, from its own record; it
// fails the test if there is none.
func (a *agent) termTime(t testing.TB) int64 {
	t.Helper()
	at, ok := a.termAt()
	if ok {
		return at
	}
	// Killed by SIGTERM's default action: the signal came before the agent
	// installed its handler, early in its life (a race-built binary exec'd
	// on a loaded machine can take seconds to get there). It has no record;
	// the default action ends it at once, so when Wait returned is when it
	// came, or a little later: an early SIGTERM still shows as early,
	// unless it came within Wait's lag of the deadline.
	if !a.alive() {
		if st, _ := a.state.Sys().(syscall.WaitStatus); st.Signaled() && st.Signal() == syscall.SIGTERM {
			t.Logf("agent %d died of SIGTERM before it installed its handler: its exit stands for when", a.pid)
			return a.exited
		}
	}
	t.Fatalf("agent %d recorded no SIGTERM", a.pid)
	return 0
}

// readBoottime reads a CLOCK_BOOTTIME ns a process recorded in path.
func readBoottime(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil || path == "" {
		return 0, false
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n, true
}

// rig is one test's files: exit triggers and SIGTERM records.
type rig struct{ dir string }

func newRig(t testing.TB) rig { return rig{t.TempDir()} }

func (r rig) path(name string) string { return filepath.Join(r.dir, name) }

// trigger creates the file name, which a process started with
// exit-file=path(name) waits for, and returns when it did: no process can
// have exited because of it before then.
func (r rig) trigger(t testing.TB, name string) int64 {
	t.Helper()
	at := boottime()
	if err := os.WriteFile(r.path(name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return at
}

// termAt returns when the process that records SIGTERM in path(name) got
// it, and whether it did.
func (r rig) termAt(name string) (int64, bool) { return readBoottime(r.path(name)) }

// fifo makes the named pipe name, which a process reads to wait for the
// test's go (release).
func (r rig) fifo(t testing.TB, name string) string {
	t.Helper()
	if err := unix.Mkfifo(r.path(name), 0o600); err != nil {
		t.Fatal(err)
	}
	return r.path(name)
}

// release writes a line to the named pipe name: what waits on it goes on.
func (r rig) release(t testing.TB, name string) {
	t.Helper()
	f, err := os.OpenFile(r.path(name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// script writes an executable script.
func (r rig) script(t testing.TB, name, body string) string {
	t.Helper()
	p := r.path(name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// newConf writes a config file with the given lines in a directory of
// its own and returns its path (writeConf rewrites it before a reload).
func newConf(t testing.TB, lines ...string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "supervisor.conf")
	writeConf(t, conf, lines...)
	return conf
}

// writeConf writes a config file with the given lines.
func writeConf(t testing.TB, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// must runs a command that must succeed and returns its output.
func must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// patient is the bound of a wait that fails the test when it runs out: at
// least a minute, whatever the test asked. A wait on what a test depends on
// only ends early when it comes, so a long bound costs nothing until
// something is wrong, and a loaded machine (a race-built binary exec'd
// beside stress-ng and nine other tests) can take many seconds to start a
// process. Speed is what benchmarks measure, not these bounds.
func patient(timeout time.Duration) time.Duration { return max(timeout, time.Minute) }

// waitFor polls cond until it holds, failing the test if timeout passes
// first: for what no event announces (a file written, a count in /proc).
// The failure says what (format and args, formatted then: a pointer
// shows what it points to at the end).
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	timeout = patient(timeout)
	for end := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
	}
}

// sleepUntil sleeps until the CLOCK_BOOTTIME instant at: for a test whose
// point is that a span of time has passed (an agent's age), or that
// nothing happened within one.
func sleepUntil(at int64) {
	if d := time.Duration(at - boottime()); d > 0 {
		time.Sleep(d)
	}
}

// tokenEnv marks the environment of every process this test binary starts
// (they inherit it), so that a PID read from a process's output can be
// proven ours before anything signals it.
const tokenEnv = "SUPERVISOR_TEST_TOKEN"

var token = os.Getenv(tokenEnv)

func init() {
	if token == "" {
		token = testutil.RandName("run")
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
	killAtCleanup(t, fd)
	return fd
}

// pinned opens a pidfd on a process the test knows to be its own (read
// from the output of a process that does not carry the token, while it
// runs) and kills it at cleanup.
func pinned(t testing.TB, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	killAtCleanup(t, fd)
	return fd
}

// killAtCleanup kills the process behind fd when the test ends.
func killAtCleanup(t testing.TB, fd int) {
	t.Cleanup(func() { killPidfd(fd) })
}

// killPid kills pid, if it runs, through a pidfd: for a PID read where
// only the test's own processes can be (a cgroup of its own).
func killPid(pid int) {
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		killPidfd(fd)
	}
}

// killPidfd kills the process behind the pidfd, if it still runs, and
// closes the pidfd.
func killPidfd(fd int) {
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	unix.Close(fd)
}

// pidfdDead waits up to timeout for the process behind the pidfd to exit
// (a pidfd turns readable when its whole thread group has: pidfd_open(2))
// and reports whether it did.
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

// statField returns field i (0: state, 1: ppid, ...) after the comm in
// /proc/PID/stat, and the comm.
func statField(pid, i int) (string, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", ""
	}
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp || rp+2 > len(s) {
		return "", ""
	}
	f := strings.Fields(s[rp+2:])
	if i >= len(f) {
		return "", s[lp+1 : rp]
	}
	return f[i], s[lp+1 : rp]
}

// procComm reads the comm of pid from /proc.
func procComm(pid int) string {
	_, comm := statField(pid, 0)
	return comm
}

// procStatus reads the field key ("Threads", "CapEff") of
// /proc/PID/status.
func procStatus(pid int, key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// openFDs counts pid's open descriptors (-1 if /proc cannot tell).
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// childrenOf returns pid's children and their states, from
// /proc/PID/task/*/children (every thread: a child's parent is the thread
// that forked it, or for a reparented orphan the reaper's leader).
func childrenOf(pid int) map[int]string {
	out := map[int]string{}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			c, _ := strconv.Atoi(f)
			st, _ := statField(c, 0)
			out[c] = st
		}
	}
	return out
}

// publicTempDir is a new directory under $TMPDIR, not t.TempDir (whose
// parent is private to root: nobody could not reach into it), traversable
// by everyone (0755) and removed with all in it when the test ends.
func publicTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startRange is the range [lo, hi) of boot-time nanoseconds in which the
// process of a /proc/PID/stat line started: its field 22, after the comm,
// is the start in clock ticks (USER_HZ, 100 a second) since boot, rounded
// down (proc(5)).
func startRange(t testing.TB, stat string) (lo, hi int64) {
	t.Helper()
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:])
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		t.Fatalf("stat %q: %v", stat, err)
	}
	tick := int64(time.Second) / 100
	return ticks * tick, (ticks + 1) * tick
}

// readFile is os.ReadFile for a file the test cannot go on without.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pidsCgroup makes a cgroup v1 pids cgroup (or, on a unified host, a v2
// cgroup) limited to max processes, removed at cleanup after killing what
// is left in it through pidfds: the test's agents enter it first thing
// (-cgroup-procs), so nothing they started outlives the test.
func pidsCgroup(t *testing.T, max int) string {
	t.Helper()
	root := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(root); err != nil {
		root = "/sys/fs/cgroup" // cgroup v2: pids.max in every non-root cgroup
	}
	dir := filepath.Join(root, fmt.Sprintf("supervisor-test-%d-%s", os.Getpid(), t.Name()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		failOrSkip(t, "cannot make a pids cgroup under %s to bound the fork bomb: %v", root, err)
	}
	t.Cleanup(func() {
		for i := 0; i < 200; i++ {
			procs := cgroupProcs(t, dir)
			if len(procs) == 0 {
				break
			}
			for _, pid := range procs {
				// Only our bomb's processes ever enter this cgroup.
				killPid(pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(max)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func cgroupProcs(t *testing.T, dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read %s: %v", dir, err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
