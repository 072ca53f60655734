package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the fake agent: run through a symlink named
// "claude" (or anything else) with SUPERVISOR_TEST_AGENT=1 it behaves as
// told by its flags. Its comm is the symlink's name, as for a real agent.
const agentEnv = "SUPERVISOR_TEST_AGENT"

var supervisorBin string

// buildFlags are the go build flags for the daemon under test.
var buildFlags []string

func init() {
	if os.Getenv(agentEnv) == "1" {
		// Keep main on the main thread, so that -rename renames the
		// process (thread-group leader), not some other thread.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(agentEnv) == "1" {
		os.Exit(fakeAgent(os.Args[1:]))
	}
	flag.Parse()
	dir, err := os.MkdirTemp("", "supervisor-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	supervisorBin = filepath.Join(dir, "supervisor")
	args := append(append([]string{"build"}, buildFlags...), "-o", supervisorBin, "../cmd/supervisor")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build supervisor: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func boottime() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// fakeAgent is the body of a fake agent process.
func fakeAgent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM (inherited by children)")
	children := fs.Int("children", 0, "children to start (through /proc/self/exe, so named \"exe\")")
	grandchildren := fs.Int("grandchildren", 0, "grandchildren each child starts")
	grandchildIgnore := fs.Bool("grandchild-ignore-term", false, "grandchildren ignore SIGTERM")
	childIgnore := fs.Bool("child-ignore-term", false, "children ignore SIGTERM")
	rename := fs.String("rename", "", "prctl(PR_SET_NAME) to this after -rename-delay")
	renameDelay := fs.Duration("rename-delay", 100*time.Millisecond, "")
	threads := fs.Int("threads", 0, "threads that rename themselves and exit")
	exitAfter := fs.Duration("exit-after", 0, "exit by itself after this long")
	termFile := fs.String("term-file", "", "on SIGTERM write CLOCK_BOOTTIME ns here, then exit 143")
	zombies := fs.Int("zombies", 0, "children that exit at once and are never waited for")
	label := fs.String("label", "", `also print "child PID LABEL", for tests that start several kinds of children`)
	exitFile := fs.String("exit-file", "", "exit by itself (status 0) once this file exists")
	var spawns []string
	fs.Func("spawn", "start a child as SPEC says (see spawnChild); repeatable", func(v string) error {
		spawns = append(spawns, v)
		return nil
	})
	relay := fs.String("relay", "", "start the child SPEC describes and exit at once: the middle of a double fork")
	cgroup := fs.String("cgroup", "", "first join this cgroup v2 directory, as a container runtime does before exec (cgroup_helpers_test.go)")
	res := resourceFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cgroup != "" {
		if err := joinCgroup(*cgroup); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := res.start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *relay != "" {
		// Started with Setsid by the parent (setsid(2) in the child before
		// exec): the child started here is in a new session, and when this
		// process exits the kernel reparents it to the nearest subreaper or
		// PID 1 (kernel/exit.c, find_new_reaper): the classic daemon.
		if _, err := spawnChild(*relay); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	switch {
	case *termFile != "":
		// With -ignore-term the SIGTERM is recorded and otherwise ignored:
		// only SIGKILL ends the process, and the test knows when SIGTERM came.
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		go func() {
			<-ch
			os.WriteFile(*termFile, []byte(strconv.FormatInt(boottime(), 10)), 0o644)
			if !*ignoreTerm {
				os.Exit(143)
			}
		}()
	case *ignoreTerm:
		signal.Ignore(syscall.SIGTERM)
	}
	fmt.Printf("pid %d\n", os.Getpid())
	if *label != "" {
		fmt.Printf("child %d %s\n", os.Getpid(), *label)
	}
	for _, spec := range spawns {
		c, err := spawnChild(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go c.Wait() // reap it (the relay of a double fork exits at once)
	}
	for i := 0; i < *zombies; i++ {
		// Started and never waited for: each stays a zombie until we exit.
		c := exec.Command("/bin/true")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for {
			// Wait for it to be a zombie (state Z in /proc/PID/stat).
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if *zombies > 0 {
		fmt.Println("zombies ready")
	}
	for i := 0; i < *children; i++ {
		cargs := []string{"-children", strconv.Itoa(*grandchildren)}
		if *grandchildIgnore {
			cargs = append(cargs, "-child-ignore-term")
		}
		if *childIgnore {
			cargs = append(cargs, "-ignore-term")
		}
		c := exec.Command("/proc/self/exe", cargs...)
		c.Stdout = os.Stdout
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *threads > 0 {
		var wg sync.WaitGroup
		for i := 0; i < *threads; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A goroutine that exits while locked ends its thread:
				// a real thread exit, after a real thread rename.
				runtime.LockOSThread()
				setName("worker")
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
		fmt.Println("threads done")
	}
	if *rename != "" {
		time.Sleep(*renameDelay)
		setName(*rename)
		fmt.Println("renamed")
	}
	if *exitAfter > 0 {
		time.Sleep(*exitAfter)
		return 0
	}
	if *exitFile != "" {
		for {
			if _, err := os.Stat(*exitFile); err == nil {
				return 0
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for {
		// Not select{}: without cgo the runtime would call that a deadlock.
		time.Sleep(time.Hour)
	}
}

// spawnChild starts a fake-agent child as spec says: comma-separated
// items, each KEY=VALUE or a bare word.
//
//	label=NAME      the child prints "child PID NAME" (required)
//	exe=PATH        run through PATH (a symlink to the test binary: the
//	                child's comm is its name); default /proc/self/exe
//	term=PATH       the child records when it got SIGTERM in PATH
//	ignore-term     SIGTERM does not end it (recorded if term= is given)
//	exit-file=PATH  the child exits by itself once PATH exists
//	env=K=V         add K=V to the child's environment
//	double-fork     start it through a relay that calls setsid, starts the
//	                child and exits: the child is reparented away
//	hold-mb=N, sleepers=N, spin, bomb, cgroup-procs=PATH: the resource
//	                flags (resources_e2e_test.go)
//
// The child shares the caller's stdout, so its lines reach the test.
func spawnChild(spec string) (*exec.Cmd, error) {
	exe := "/proc/self/exe"
	var args, env []string
	var relay bool
	for _, item := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(item, "=")
		switch k {
		case "label":
			args = append(args, "-label", v)
		case "exe":
			exe = v
		case "term":
			args = append(args, "-term-file", v)
		case "ignore-term":
			args = append(args, "-ignore-term")
		case "exit-file":
			args = append(args, "-exit-file", v)
		case "env":
			env = append(env, v)
		case "double-fork":
			relay = true
		case "hold-mb", "sleepers", "cgroup-procs", "holding":
			args = append(args, "-"+k, v)
		case "spin", "bomb":
			args = append(args, "-"+k)
		default:
			return nil, fmt.Errorf("spawn %q: unknown item %q", spec, item)
		}
	}
	var c *exec.Cmd
	if relay {
		// The relay gets the spec without double-fork.
		var rest []string
		for _, item := range strings.Split(spec, ",") {
			if item != "double-fork" {
				rest = append(rest, item)
			}
		}
		c = exec.Command("/proc/self/exe", "-relay", strings.Join(rest, ","))
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		c = exec.Command(exe, args...)
		c.Env = append(os.Environ(), env...)
	}
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("spawn %q: %w", spec, err)
	}
	return c, nil
}

// setName renames the calling thread, as Node's process.title does for the
// main thread: prctl(PR_SET_NAME), which the kernel reports as a comm event.
func setName(name string) {
	p, _ := unix.BytePtrFromString(name)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
}

// agent is a fake agent started by a test.
type agent struct {
	cmd    *exec.Cmd
	pid    int
	t0     int64 // CLOCK_BOOTTIME just before fork: no later than its start
	done   chan struct{}
	exited int64 // CLOCK_BOOTTIME when Wait returned
	state  *os.ProcessState
	lines  chan string
	term   string
}

// startAgent runs the fake agent under the name comm (a symlink to the test
// binary in a fresh directory) with the agent flags args.
func startAgent(t testing.TB, comm string, args ...string) *agent {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, comm)
	self, _ := os.Executable()
	if err := os.Symlink(self, path); err != nil {
		t.Fatal(err)
	}
	a := &agent{done: make(chan struct{}), lines: make(chan string, 100), term: filepath.Join(dir, "term")}
	a.cmd = exec.Command(path, append([]string{"-term-file", a.term}, args...)...)
	if hasFlag(args, "-ignore-term") {
		a.cmd = exec.Command(path, args...)
	}
	a.cmd.Env = append(os.Environ(), agentEnv+"=1")
	a.cmd.Stderr = os.Stderr
	out, _ := a.cmd.StdoutPipe()
	a.t0 = boottime()
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.pid = a.cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case a.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		a.cmd.Wait()
		a.exited = boottime()
		a.state = a.cmd.ProcessState
		close(a.done)
	}()
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
	})
	return a
}

func hasFlag(args []string, f string) bool {
	for _, a := range args {
		if a == f {
			return true
		}
	}
	return false
}

// waitLine waits for a line from the agent's process tree starting with prefix.
func (a *agent) waitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	tm := time.After(timeout)
	for {
		select {
		case l := <-a.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-tm:
			t.Fatalf("agent %d: no %q line within %s", a.pid, prefix, timeout)
		}
	}
}

// waitExit waits for the agent to die and returns how it died.
func (a *agent) waitExit(t testing.TB, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	select {
	case <-a.done:
		return a.state.Sys().(syscall.WaitStatus)
	case <-time.After(timeout):
		t.Fatalf("agent %d still alive after %s", a.pid, timeout)
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

// termTime is when the agent received SIGTERM, from its own record.
func (a *agent) termTime(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile(a.term)
	if err != nil {
		t.Fatalf("agent %d recorded no SIGTERM: %v", a.pid, err)
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n
}

// daemon is a supervisor run by a test, always scoped with --under to the
// test process so it can never touch anything the test did not start.
type testDaemon struct {
	cmd  *exec.Cmd
	addr string
	api  string // the API socket: /agents, /events (and /healthz, /metrics)
	mu   sync.Mutex
	logs []map[string]any
	cond *sync.Cond
	done chan struct{}
	// stopSignal ends the daemon at cleanup (SIGTERM unless set).
	stopSignal os.Signal
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run the tests as root")
		}
		t.Skip("skipped: needs root for the proc connector and pidfd signals to other processes; run as root")
	}
}

func startDaemon(t testing.TB, args ...string) *testDaemon {
	t.Helper()
	return startDaemonCmd(t, exec.Command(supervisorBin, append([]string{"run",
		"--listen", "127.0.0.1:0", "--under", strconv.Itoa(os.Getpid()),
		"--state-dir", t.TempDir(), "--log-level", "debug", "--control-socket", ""}, args...)...))
}

func startDaemonCmd(t testing.TB, cmd *exec.Cmd) *testDaemon {
	t.Helper()
	d := &testDaemon{cmd: cmd, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	withAPISocket(t, cmd)
	errp, _ := cmd.StderrPipe()
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(errp)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "non-json", "line": sc.Text()}
			}
			d.mu.Lock()
			d.logs = append(d.logs, m)
			d.cond.Broadcast()
			d.mu.Unlock()
		}
		cmd.Wait()
		d.mu.Lock()
		close(d.done)
		d.cond.Broadcast()
		d.mu.Unlock()
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			d.mu.Lock()
			for _, l := range d.logs {
				b, _ := json.Marshal(l)
				t.Logf("daemon: %s", b)
			}
			d.mu.Unlock()
		}
	})
	ready := d.waitLog(t, 30*time.Second, func(m map[string]any) bool { return m["msg"] == "ready" })
	d.addr, _ = ready["listen"].(string)
	d.api, _ = ready["api_socket"].(string)
	return d
}

// withAPISocket gives a daemon run or init its own API socket, unless the
// test chose one: never the default beside the default control socket,
// which a real daemon on this machine may use. (A short directory: a unix
// socket path has at most 107 bytes.)
func withAPISocket(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if cmd.Path != supervisorBin || len(cmd.Args) < 2 || (cmd.Args[1] != "run" && cmd.Args[1] != "init") {
		return
	}
	for _, a := range cmd.Args {
		if a == "--" {
			break
		}
		if a == "--api-socket" || strings.HasPrefix(a, "--api-socket=") {
			return
		}
	}
	dir, err := os.MkdirTemp("", "sv-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd.Args = append([]string{cmd.Args[0], cmd.Args[1], "--api-socket", filepath.Join(dir, "api.sock")}, cmd.Args[2:]...)
}

// apiClient is an HTTP client that reaches the daemon's endpoints: on its
// API socket, or on --listen (/healthz and /metrics only) without one.
// timeout 0: none (a stream). Each request has a connection of its own,
// closed after it: the daemon caps a peer's connections.
func (d *testDaemon) apiClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	if d.api != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.api)
		}
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// url is the URL of an endpoint for apiClient.
func (d *testDaemon) url(path string) string {
	if d.api == "" {
		return "http://" + d.addr + path
	}
	return "http://supervisor" + path
}

func (d *testDaemon) stop(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	sig := d.stopSignal
	if sig == nil {
		sig = syscall.SIGTERM
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		if d.cmd.ProcessState.ExitCode() == 66 {
			t.Error("the race detector found a data race in the daemon (exit 66); see its stderr")
		}
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Error("daemon did not stop within 30s of SIGTERM")
	}
}

// waitLog waits for a log line satisfying pred; it fails the test if the
// daemon exits or the timeout passes first.
func (d *testDaemon) waitLog(t testing.TB, timeout time.Duration, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	timer := time.AfterFunc(timeout, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
	defer timer.Stop()
	end := time.Now().Add(timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; ; i++ {
		for ; i < len(d.logs); i++ {
			if pred(d.logs[i]) {
				return d.logs[i]
			}
		}
		i--
		select {
		case <-d.done:
			t.Fatalf("daemon exited before the expected log line")
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("no expected log line within %s", timeout)
		}
		d.cond.Wait()
	}
}

// findLogs returns the log lines so far that satisfy pred.
func (d *testDaemon) findLogs(pred func(map[string]any) bool) []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []map[string]any
	for _, l := range d.logs {
		if pred(l) {
			out = append(out, l)
		}
	}
	return out
}

func killOf(pid int) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return (m["msg"] == "kill" || m["msg"] == "would kill") && num(m["pid"]) == int64(pid)
	}
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func (d *testDaemon) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := d.apiClient(30 * time.Second).Get(d.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// agentsFor returns pid's /agents entries for something queued (an agent or
// a session's leftovers).
func (d *testDaemon) agentsFor(t testing.TB, pid int) []agentView {
	var all []agentView
	d.get(t, "/agents", &all)
	var out []agentView
	for _, a := range all {
		// Entries with no reason are a session's figures alone (exempt,
		// being killed): nothing queued.
		if int(a.PID) == pid && a.Reason != "" {
			out = append(out, a)
		}
	}
	return out
}

// waitTracked waits until the daemon lists pid as an agent.
func (d *testDaemon) waitTracked(t testing.TB, pid int) agentView {
	t.Helper()
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		if as := d.agentsFor(t, pid); len(as) > 0 {
			return as[0]
		}
		d.waitLog(t, time.Until(end), func(m map[string]any) bool {
			return m["msg"] == "agent" && num(m["pid"]) == int64(pid)
		})
	}
	t.Fatalf("pid %d never tracked as an agent", pid)
	return agentView{}
}

// checkKill asserts the daemon's record of a kill and the agent's own
// experience: never early, not absurdly late.
func checkKill(t testing.TB, m map[string]any, a *agent, maxAge time.Duration) {
	t.Helper()
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if signalled < deadline {
		t.Errorf("pid %d signalled %v before its deadline", a.pid, time.Duration(deadline-signalled))
	}
	if deadline < start+int64(maxAge) {
		t.Errorf("pid %d: deadline %d earlier than start %d + max age", a.pid, deadline, start)
	}
	if start < a.t0-int64(time.Millisecond) && m["start_exact"] == true {
		t.Errorf("pid %d: exact start %d before the test forked it at %d", a.pid, start, a.t0)
	}
	if late := time.Duration(signalled - deadline); late > time.Second {
		t.Errorf("pid %d signalled %s after its deadline", a.pid, late)
	}
	// The agent's own view: it must not have been signalled or have died
	// before max age had passed since the test started it.
	if _, err := os.Stat(a.term); err == nil {
		if tt := a.termTime(t); tt < a.t0+int64(maxAge) {
			t.Errorf("pid %d got SIGTERM %s after it was started, before max age %s", a.pid, time.Duration(tt-a.t0), maxAge)
		}
	}
	select {
	case <-a.done:
		if a.exited < a.t0+int64(maxAge) {
			t.Errorf("pid %d died %s after start, before max age %s", a.pid, time.Duration(a.exited-a.t0), maxAge)
		}
	default:
	}
}
