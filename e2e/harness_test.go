package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The harness: the daemon under test, how tests run beside each other, and
// what every test needs of the machine. The processes the tests start are
// in procs_test.go, the test binary's other modes (the fake agent, the
// wrappers) in modes_test.go.

var (
	// supervisorBin is the daemon under test, built by TestMain (or by the
	// test process that started this one: ranApart).
	supervisorBin string
	// buildFlags are the go build flags for it (race_test.go adds -race).
	buildFlags []string
	// helperDir is this test process's own scratch directory: C helpers
	// are built there (helper_c_test.go). Removed when the process ends.
	helperDir string
)

const (
	// apartEnv names the one test a test process started by ranApart
	// runs; binEnv hands it the daemon already built.
	apartEnv = "SUPERVISOR_E2E_APART"
	binEnv   = "SUPERVISOR_E2E_BIN"
	// parallelTests is how many tests run apart at once unless
	// -test.parallel says otherwise: they mostly wait on timers and
	// deadlines, not on the CPU.
	parallelTests = 10
)

func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", strconv.Itoa(parallelTests))
	}
	var err error
	if helperDir, err = os.MkdirTemp("", "supervisor-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if supervisorBin = os.Getenv(binEnv); supervisorBin == "" {
		supervisorBin = helperDir + "/supervisor"
		args := append(append([]string{"build"}, buildFlags...), "-o", supervisorBin, "../cmd/supervisor")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build supervisor: %v\n%s", err, out)
			os.RemoveAll(helperDir)
			os.Exit(1)
		}
	}
	faults := faultRowsDir(helperDir) // faulttable_test.go
	code := m.Run()
	code = faultTableMain(code, faults)
	os.RemoveAll(helperDir)
	os.Exit(code)
}

// ranApart runs the calling test in a test process of its own, in
// parallel with the other tests that do, and reports whether it did: then
// the caller returns at once, its body having run there. In that process
// ranApart reports false and the body runs. Both check first what the
// test needs of the machine: root, and needs (needUnshare, needPSI).
//
// A test process of its own is what scopes the test's daemons to the
// test: they run with --under that process, so the agents other tests
// start beside it (named claude too) are never theirs. Tests that load the
// whole machine (fork storms that every daemon receives, thousands of
// agents at once, HTTP floods) stay serial: go test runs them before the
// parallel ones.
func ranApart(t *testing.T, needs ...func(testing.TB)) bool {
	t.Helper()
	return ranApartTurn(t, "", needs...)
}

// turns holds a lock for each kind of test that must run alone among its
// kind: ranApartTurn.
var turns sync.Map // string → *sync.Mutex

// ranApartTurn is ranApart for a test that shares something machine-wide
// with the other tests of its kind (memory pressure: a PSI trigger fires
// on anyone's; the root cgroup's memory controller): those take turns,
// beside the other tests.
func ranApartTurn(t *testing.T, kind string, needs ...func(testing.TB)) bool {
	t.Helper()
	needRoot(t)
	for _, need := range needs {
		need(t)
	}
	if os.Getenv(apartEnv) == t.Name() {
		return false
	}
	t.Parallel()
	if kind != "" {
		mu, _ := turns.LoadOrStore(kind, new(sync.Mutex))
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
	}
	args := []string{"-test.run", "^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count", "1", "-test.v"}
	if dl, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(dl).Round(time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), apartEnv+"="+t.Name(), binEnv+"="+supervisorBin)
	out, err := cmd.CombinedOutput()
	passed := bytes.Contains(out, []byte("\n--- PASS: "+t.Name()+" "))
	skipped := bytes.Contains(out, []byte("\n--- SKIP: "+t.Name()+" "))
	if err != nil || !(passed || skipped) || testing.Verbose() {
		// Indented: a line of the test's own output is never taken for
		// this process's result line (test2json reads those).
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			t.Log("| " + l)
		}
	}
	switch {
	case err != nil:
		t.Fatalf("the test failed in its own process (%v)", err)
	case skipped:
		t.Skip("skipped in its own process (see its output)")
	case !passed:
		t.Fatal("the test did not run in its own process")
	}
	return true
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		failOrSkip(t, "needs root for the proc connector and pidfd signals to other processes; run as root (CI must)")
	}
}

// failOrSkip: in CI the machine must be as the test needs it; elsewhere
// the test says why it does not run.
func failOrSkip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf("skipped: "+format, args...)
}

// needTool: the test runs tool (from the package named in pkg, "" if
// it is the tool's name), which scripts/test installs.
func needTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if pkg == "" {
		pkg = tool
	}
	if _, err := exec.LookPath(tool); err != nil {
		failOrSkip(t, "needs %s: apt-get install %s (scripts/test does): %v", tool, pkg, err)
	}
}

// needUnshare: the namespace tests run unshare(1) from util-linux, for a
// fresh PID namespace.
func needUnshare(t testing.TB) {
	t.Helper()
	needTool(t, "unshare", "util-linux")
}

// logStream is a process's JSON log, a line at a time as it writes them
// (a line that is not JSON is kept as {"msg":"non-json","line":...}), for
// tests to wait on. Each wait goes through the lines in order and asks its
// predicate once a line: a predicate may count.
type logStream struct {
	mu    sync.Mutex
	cond  *sync.Cond
	logs  []map[string]any
	eof   bool          // every holder of the pipe closed it: no line will come
	ended chan struct{} // closed then
}

func newLogStream() *logStream {
	s := &logStream{ended: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// read reads r's lines until EOF.
func (s *logStream) read(r io.Reader) {
	defer close(s.ended)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = map[string]any{"msg": "non-json", "line": sc.Text()}
		}
		s.mu.Lock()
		s.logs = append(s.logs, m)
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.eof = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// waitCond waits on s.cond (s.mu held) until ok says so, the log ends or
// timeout passes; it reports whether ok did.
func (s *logStream) waitCond(timeout time.Duration, ok func() bool) bool {
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	end := time.Now().Add(timeout)
	for !ok() {
		if s.eof || time.Now().After(end) {
			return ok()
		}
		s.cond.Wait()
	}
	return true
}

// waitLogsFrom waits until n of the lines from index from on satisfy pred,
// and returns them and the index of the last; it fails the test if the log
// ends (the process exited) or the timeout passes first.
func (s *logStream) waitLogsFrom(t testing.TB, from, n int, timeout time.Duration, pred func(map[string]any) bool) ([]map[string]any, int) {
	t.Helper()
	timeout = patient(timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []map[string]any
	i, last := from, -1
	found := s.waitCond(timeout, func() bool {
		for ; i < len(s.logs) && len(got) < n; i++ {
			if pred(s.logs[i]) {
				got, last = append(got, s.logs[i]), i
			}
		}
		return len(got) >= n
	})
	switch {
	case found:
		return got, last
	case s.eof:
		t.Fatalf("the log ended (the process exited) with %d of %d expected lines", len(got), n)
	default:
		t.Fatalf("%d of %d expected log lines within %s", len(got), n, timeout)
	}
	return nil, 0
}

// waitLog waits for a log line satisfying pred.
func (s *logStream) waitLog(t testing.TB, timeout time.Duration, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	l, _ := s.waitLogsFrom(t, 0, 1, timeout, pred)
	return l[0]
}

// waitLogFrom is waitLog for the lines from index from on; it returns the
// line and its index.
func (s *logStream) waitLogFrom(t testing.TB, from int, timeout time.Duration, pred func(map[string]any) bool) (map[string]any, int) {
	t.Helper()
	l, i := s.waitLogsFrom(t, from, 1, timeout, pred)
	return l[0], i
}

// waitLogs waits until n log lines satisfy pred and returns them.
func (s *logStream) waitLogs(t testing.TB, n int, timeout time.Duration, pred func(map[string]any) bool) []map[string]any {
	t.Helper()
	l, _ := s.waitLogsFrom(t, 0, n, timeout, pred)
	return l
}

// findLogs returns the log lines so far that satisfy pred.
func (s *logStream) findLogs(pred func(map[string]any) bool) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.logs {
		if pred(l) {
			out = append(out, l)
		}
	}
	return out
}

// noLogs marks the test failed (and goes on) when log lines so far
// satisfy pred: what must not have happened did. The message is format
// and args, then the lines.
func (s *logStream) noLogs(t testing.TB, pred func(map[string]any) bool, format string, args ...any) {
	t.Helper()
	if l := s.findLogs(pred); len(l) > 0 {
		t.Errorf(format+": %v", append(args, l)...)
	}
}

// lines is how many log lines came so far: where to wait from for what
// comes after.
func (s *logStream) lines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logs)
}

// dump logs every line, for a failed test.
func (s *logStream) dump(t testing.TB, who string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.logs {
		b, _ := json.Marshal(l)
		t.Logf("%s: %s", who, b)
	}
}

// testDaemon is a supervisor run by a test, always scoped with --under to
// the test process so it can never touch anything the test did not start.
type testDaemon struct {
	*logStream
	cmd  *exec.Cmd
	addr string // --listen's address (/healthz, /metrics)
	api  string // the API socket: /agents, /events (and /healthz, /metrics)
	done chan struct{}
	// stopSignal ends the daemon at cleanup (SIGTERM unless set).
	stopSignal os.Signal
}

// runArgs are `supervisor run` with the flags of every test daemon: its
// own state dir, debug logs, no control socket unless the test gives one,
// then args (a flag given twice: the later wins).
func runArgs(t testing.TB, args ...string) []string {
	return append([]string{"run", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "debug",
		"--control-socket", ""}, args...)
}

// daemonArgs are runArgs scoped with --under to this test process.
func daemonArgs(t testing.TB, args ...string) []string {
	return runArgs(t, append([]string{"--under", strconv.Itoa(os.Getpid())}, args...)...)
}

// startDaemon runs the daemon with daemonArgs and waits until it is ready.
func startDaemon(t testing.TB, args ...string) *testDaemon {
	t.Helper()
	return startDaemonCmd(t, exec.Command(supervisorBin, daemonArgs(t, args...)...))
}

// startDaemonUnder is startDaemon through a wrapper command (prlimit, or
// the test binary as a wrapper: modes_test.go), with env added to the
// daemon's environment.
func startDaemonUnder(t testing.TB, wrap, env []string, args ...string) *testDaemon {
	t.Helper()
	argv := append(append(slices.Clone(wrap), supervisorBin), daemonArgs(t, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	return startDaemonCmd(t, cmd)
}

// startDaemonCmd starts cmd, a daemon (possibly under wrappers), and waits
// for its ready line.
func startDaemonCmd(t testing.TB, cmd *exec.Cmd) *testDaemon {
	t.Helper()
	d := &testDaemon{logStream: newLogStream(), cmd: cmd, done: make(chan struct{})}
	withAPISocket(t, cmd)
	errp, _ := cmd.StderrPipe()
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.read(errp)
		cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			d.dump(t, "daemon")
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
// socket path has at most 107 bytes.) The daemon may be started through
// wrappers: its arguments follow supervisorBin's.
func withAPISocket(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	bin := slices.Index(cmd.Args, supervisorBin)
	if bin < 0 || bin+1 >= len(cmd.Args) || (cmd.Args[bin+1] != "run" && cmd.Args[bin+1] != "init") {
		return
	}
	for _, a := range cmd.Args[bin+2:] {
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
	cmd.Args = slices.Insert(cmd.Args, bin+2, "--api-socket", dir+"/api.sock")
}

// stop ends the daemon (stopSignal, SIGKILL after 30 s) unless it exited,
// and fails the test if the race detector found a race in it.
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

// exitsCleanly waits for the daemon to exit by itself, after a signal the
// test sent, and wants exit status 0.
func (d *testDaemon) exitsCleanly(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("the daemon did not exit within %s", timeout)
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("exit %v, want 0", d.cmd.ProcessState)
	}
}

// hup sends the daemon SIGHUP: it reads its configuration again. What
// that must do (reload, refuse, send an event) the test waits for.
func (d *testDaemon) hup() { d.cmd.Process.Signal(syscall.SIGHUP) }

// reload sends SIGHUP and waits for the daemon to say the new
// configuration is in force: that log line.
func (d *testDaemon) reload(t testing.TB) map[string]any {
	t.Helper()
	return d.hupUntil(t, "configuration reloaded")
}

// reloadRejected sends SIGHUP and waits for the daemon to refuse the new
// configuration: that log line, whose error says why.
func (d *testDaemon) reloadRejected(t testing.TB) map[string]any {
	t.Helper()
	return d.hupUntil(t, "reload rejected; the old configuration stays in force")
}

// hupUntil sends SIGHUP and waits for the first log line msg after it.
func (d *testDaemon) hupUntil(t testing.TB, msg string) map[string]any {
	t.Helper()
	from := d.lines()
	d.hup()
	m, _ := d.waitLogFrom(t, from, 30*time.Second, func(m map[string]any) bool { return m["msg"] == msg })
	return m
}
