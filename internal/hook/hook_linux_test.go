package hook

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// These tests run real shells and real process groups; every process they
// signal is a hook they started (killGroup on our own child's group).

func newTest(t *testing.T, cfg Config) (*Runner, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	cfg.Log = zap.New(core)
	r := New(cfg)
	t.Cleanup(func() {
		r.Stop(5 * time.Second)
		noZombies(t)
	})
	return r, logs
}

// noZombies fails if the test process has an exited child nobody waited
// for (waitid(2) with WNOWAIT: looks, reaps nothing).
func noZombies(t *testing.T) {
	t.Helper()
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err == nil && info.Signo != 0 {
		t.Errorf("a child was left a zombie (siginfo %+v)", info)
	}
}

// until waits for cond, failing after timeout.
func until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ev(pid int32) Event {
	return Event{PID: pid, Comm: "claude", Reason: "max_age", Outcome: "terminated", SessionPID: pid,
		Record: []byte(`{"pid":` + strconv.Itoa(int(pid)) + `,"comm":"claude"}` + "\n")}
}

func count(t *testing.T, glob string) int {
	m, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func TestEnvAndStdin(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://u:secret@db/x")
	t.Setenv("SOME_TOKEN", "secret")
	dir := t.TempDir()
	r, logs := newTest(t, Config{})
	e := ev(4242)
	e.SessionPID = 0
	if !r.Run(`cat > "`+dir+`/stdin"; env > "`+dir+`/env"; pwd > "`+dir+`/pwd"`, e) {
		t.Fatal("dropped")
	}
	until(t, 10*time.Second, "the hook ran", func() bool { return r.Stats().Runs == 1 })
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	if string(stdin) != string(e.Record) {
		t.Errorf("stdin %q, want %q", stdin, e.Record)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	vars := strings.Split(strings.TrimSpace(string(env)), "\n")
	for _, want := range []string{"PATH=" + Path, "REAPER_EVENT_PID=4242", "REAPER_EVENT_COMM=claude",
		"REAPER_EVENT_REASON=max_age", "REAPER_EVENT_OUTCOME=terminated", "REAPER_EVENT_SESSION_PID="} {
		if !slices.Contains(vars, want) {
			t.Errorf("environment lacks %s: %q", want, vars)
		}
	}
	if strings.Contains(string(env), "secret") || strings.Contains(string(env), "DATABASE_URL") {
		t.Errorf("the daemon's environment reached the hook: %q", vars)
	}
	if pwd, _ := os.ReadFile(filepath.Join(dir, "pwd")); strings.TrimSpace(string(pwd)) != "/" {
		t.Errorf("working directory %q, want /", pwd)
	}
	if s := r.Stats(); s.Failures != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
	if l := logs.FilterMessage("hook").All(); len(l) != 1 || l[0].ContextMap()["exit"] != int64(0) {
		t.Errorf("log %+v, want one hook line with exit 0", l)
	}
	e.SessionPID = 7
	if env := Env(e); !slices.Contains(env, "REAPER_EVENT_SESSION_PID=7") {
		t.Errorf("Env %q", env)
	}
}

// blocker is a hook that marks its start, waits for release, marks its end.
func blocker(dir string) string {
	return `touch "` + dir + `/start.$$"; while [ ! -e "` + dir + `/release" ]; do sleep 0.01; done; touch "` + dir + `/end.$$"`
}

func TestConcurrencyBound(t *testing.T) {
	dir := t.TempDir()
	r, _ := newTest(t, Config{Concurrency: 4})
	for i := range 10 {
		if !r.Run(blocker(dir), ev(int32(100+i))) {
			t.Fatalf("hook %d dropped", i)
		}
	}
	until(t, 10*time.Second, "4 hooks started", func() bool { return count(t, dir+"/start.*") == 4 })
	if s := r.Stats(); s.Running != 4 || s.Queued != 6 {
		t.Errorf("stats %+v, want 4 running and 6 queued", s)
	}
	time.Sleep(200 * time.Millisecond) // give a fifth the chance to start, wrongly
	if n := count(t, dir+"/start.*"); n != 4 {
		t.Errorf("%d hooks running at once, want at most 4", n)
	}
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	until(t, 20*time.Second, "all 10 ran", func() bool { return r.Stats().Runs == 10 })
	if n := count(t, dir+"/end.*"); n != 10 {
		t.Errorf("%d hooks finished, want 10", n)
	}
	if s := r.Stats(); s.Running != 0 || s.Queued != 0 || s.Failures != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestQueueOverflowDropped(t *testing.T) {
	dir := t.TempDir()
	r, logs := newTest(t, Config{Concurrency: 1, QueueSize: 2})
	var got []bool
	for i := range 5 {
		got = append(got, r.Run(blocker(dir), ev(int32(200+i))))
	}
	if want := []bool{true, true, true, false, false}; !slices.Equal(got, want) {
		t.Errorf("Run returned %v, want %v", got, want)
	}
	if s := r.Stats(); s.Dropped != 2 || s.Queued != 2 || s.Running != 1 {
		t.Errorf("stats %+v, want 2 dropped, 2 queued, 1 running", s)
	}
	if n := logs.FilterMessage("hook dropped: queue full").Len(); n != 2 {
		t.Errorf("%d drop warnings, want 2", n)
	}
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	until(t, 20*time.Second, "the 3 kept ran", func() bool { return r.Stats().Runs == 3 })
	if n := count(t, dir+"/end.*"); n != 3 {
		t.Errorf("%d hooks ran, want 3", n)
	}
}

// pidfdOf opens a pidfd for the pid in file once the file holds one; the
// process is then known to be the hook's (it is still waiting on it).
func pidfdOf(t *testing.T, file string) int {
	t.Helper()
	var pid int
	until(t, 10*time.Second, file+" written", func() bool {
		b, _ := os.ReadFile(file)
		s := strings.TrimSpace(string(b))
		pid, _ = strconv.Atoi(s)
		return strings.HasSuffix(string(b), "\n") && pid > 1
	})
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// exited reports whether the pidfd's process has exited (a pidfd polls
// readable then, pidfd_open(2)).
func exited(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(p, 0)
	return n == 1
}

func TestTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	const timeout = 500 * time.Millisecond
	r, logs := newTest(t, Config{Timeout: timeout})
	// The shell forks a child that forks a grandchild; all three ignore
	// SIGTERM, and would live a minute.
	cmd := `trap "" TERM; sh -c 'sleep 60 & echo $! > ` + dir + `/grandchild; wait' & echo $! > ` + dir + `/child; wait`
	t0 := time.Now()
	r.Run(cmd, ev(300))
	child, grandchild := pidfdOf(t, dir+"/child"), pidfdOf(t, dir+"/grandchild")
	until(t, 10*time.Second, "the hook ended", func() bool { return r.Stats().Runs == 1 })
	took := time.Since(t0)
	if took < timeout || took > timeout+5*time.Second {
		t.Errorf("hook ended after %s, timeout %s", took, timeout)
	}
	until(t, 5*time.Second, "child and grandchild gone", func() bool { return exited(child) && exited(grandchild) })
	if s := r.Stats(); s.Failures != 1 {
		t.Errorf("stats %+v, want 1 failure", s)
	}
	l := logs.FilterMessage("hook timed out: its process group was killed").All()
	if len(l) != 1 || l[0].ContextMap()["status"] != "signal: killed" {
		t.Errorf("log %+v, want one timeout line with signal: killed", l)
	}
}

func TestLeftBehindKilled(t *testing.T) {
	dir := t.TempDir()
	r, _ := newTest(t, Config{})
	// Exits at once, leaving a background process that would write a
	// file a second later.
	r.Run(`(sleep 1; touch `+dir+`/survived) & echo $! > `+dir+`/bg`, ev(310))
	bg := pidfdOf(t, dir+"/bg")
	until(t, 10*time.Second, "the hook ended", func() bool { return r.Stats().Runs == 1 })
	until(t, 5*time.Second, "background process killed", func() bool { return exited(bg) })
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(dir + "/survived"); err == nil {
		t.Error("a process the hook left behind outlived it")
	}
	if s := r.Stats(); s.Failures != 0 {
		t.Errorf("stats %+v: the hook itself succeeded", s)
	}
}

func TestOutputBounded(t *testing.T) {
	r, logs := newTest(t, Config{OutputLimit: 100})
	r.Run(`head -c 100000 /dev/zero | tr '\0' x; echo done >&2`, ev(320))
	until(t, 10*time.Second, "the hook ran", func() bool { return r.Stats().Runs == 1 })
	l := logs.FilterMessage("hook").All()
	if len(l) != 1 {
		t.Fatalf("%d hook lines, want 1", len(l))
	}
	m := l[0].ContextMap()
	if out := m["output"].(string); out != strings.Repeat("x", 100) {
		t.Errorf("output %d bytes %.20q..., want the first 100", len(out), out)
	}
	if m["output_cut_bytes"] != int64(100000+5-100) {
		t.Errorf("output_cut_bytes %v, want %d", m["output_cut_bytes"], 100000+5-100)
	}
}

func TestFailuresCounted(t *testing.T) {
	r, logs := newTest(t, Config{})
	r.Run(`echo broken >&2; exit 3`, ev(330))
	until(t, 10*time.Second, "the hook ran", func() bool { return r.Stats().Runs == 1 })
	l := logs.FilterMessage("hook failed").All()
	if len(l) != 1 || l[0].ContextMap()["exit"] != int64(3) || l[0].ContextMap()["output"] != "broken" {
		t.Errorf("log %+v, want one failure with exit 3 and its output", l)
	}
	bad, logs2 := newTest(t, Config{Shell: filepath.Join(t.TempDir(), "no-shell")})
	bad.Run("true", ev(331))
	until(t, 10*time.Second, "the spawn failed", func() bool { return bad.Stats().Runs == 1 })
	if s := bad.Stats(); s.Failures != 1 || logs2.FilterMessage("hook failed to start").Len() != 1 {
		t.Errorf("spawn error not counted: %+v", s)
	}
	if s := r.Stats(); s.Failures != 1 {
		t.Errorf("stats %+v, want 1 failure", s)
	}
}

func TestStop(t *testing.T) {
	r, logs := newTest(t, Config{Concurrency: 1})
	for i := range 3 {
		r.Run(`trap "" TERM; sleep 60`, ev(int32(340+i)))
	}
	until(t, 10*time.Second, "one running", func() bool { return r.Stats().Running == 1 })
	t0 := time.Now()
	r.Stop(300 * time.Millisecond)
	if took := time.Since(t0); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("Stop took %s, bound 300ms", took)
	}
	if s := r.Stats(); s.Dropped != 2 || s.Failures != 1 || s.Runs != 1 || s.Running != 0 {
		t.Errorf("stats %+v, want 2 dropped, 1 run killed", s)
	}
	if logs.FilterMessage("hook killed at shutdown").Len() != 1 {
		t.Error("no shutdown kill logged")
	}
	if r.Run("true", ev(350)) || r.Stats().Dropped != 3 {
		t.Error("Run after Stop was not dropped")
	}
	noZombies(t)
}

func TestEmptyCommandDoesNothing(t *testing.T) {
	r, _ := newTest(t, Config{})
	if !r.Run("", ev(360)) || r.Stats() != (Stats{}) {
		t.Errorf("an empty command ran or counted: %+v", r.Stats())
	}
}

func TestKillGroupGuard(t *testing.T) {
	for _, pg := range []int{-1, 0, 1, os.Getpid(), unix.Getpgrp()} {
		if err := killGroup(pg); err == nil {
			t.Errorf("killGroup(%d) was allowed", pg)
		}
	}
}

// TestNoInheritedDescriptors: a descriptor the daemon inherited without
// close-on-exec does not reach the hook.
func TestNoInheritedDescriptors(t *testing.T) {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // no O_CLOEXEC, as a parent might leave one
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	dir := t.TempDir()
	r, _ := newTest(t, Config{})
	// A child shell lists them: dash itself holds a close-on-exec copy
	// of stdout while it redirects.
	r.Run(`sh -c 'ls /proc/$$/fd' > `+dir+`/fds`, ev(370))
	until(t, 10*time.Second, "the hook ran", func() bool { return r.Stats().Runs == 1 })
	b, _ := os.ReadFile(dir + "/fds")
	if got := strings.Fields(string(b)); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("hook's descriptors %q, want 0 1 2 (inherited: %d)", got, fd)
	}
}

// regRecorder is a Registry that records what it is told, and checks that
// a child is registered while it is still unreaped (as the init reaper
// needs: it must never see the child unregistered).
type regRecorder struct {
	mu      sync.Mutex
	owned   map[int]bool
	disowns []int
	bad     []string
}

func (r *regRecorder) Own(start func() (int, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err == nil {
		r.owned[pid] = true
	}
	return err
}

func (r *regRecorder) Disown(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.owned[pid] {
		r.bad = append(r.bad, "disown of an unregistered pid "+strconv.Itoa(pid))
	}
	// os/exec has reaped it by now: no zombie of that pid is ours.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err == nil {
		r.bad = append(r.bad, "disowned before it was reaped: "+strconv.Itoa(pid))
	}
	delete(r.owned, pid)
	r.disowns = append(r.disowns, pid)
}

// Under init every hook process is registered before the reaper can see
// it and disowned once exec.Cmd has reaped it; a hook that cannot start is
// never registered.
func TestRegistry(t *testing.T) {
	reg := &regRecorder{owned: map[int]bool{}}
	r, logs := newTest(t, Config{})
	r.SetRegistry(reg)
	r.Run("exit 0", ev(1))
	r.Run("exit 3", ev(2))
	until(t, 10*time.Second, "two hooks run", func() bool { return r.Stats().Runs == 2 })
	until(t, 5*time.Second, "two disowns", func() bool {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		return len(reg.disowns) == 2
	})
	reg.mu.Lock()
	if len(reg.owned) != 0 || len(reg.bad) != 0 {
		t.Errorf("owned %v, problems %v", reg.owned, reg.bad)
	}
	reg.mu.Unlock()
	r2, _ := newTest(t, Config{Shell: "/nonexistent/sh"})
	r2.SetRegistry(reg)
	r2.Run("true", ev(3))
	until(t, 5*time.Second, "failed start counted", func() bool { return r2.Stats().Failures == 1 })
	reg.mu.Lock()
	if len(reg.disowns) != 2 || len(reg.owned) != 0 {
		t.Errorf("a hook that never started: owned %v, disowns %v", reg.owned, reg.disowns)
	}
	reg.mu.Unlock()
	_ = logs
}
