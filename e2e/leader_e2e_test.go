package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// leaderC is a multi-threaded agent whose leader thread does not outlive
// the process: `claude pthread-exit` starts a thread that waits forever and
// ends its main thread with pthread_exit (the leader stays a zombie while
// the thread runs); `claude exec-thread` has its second thread execve
// `claude wait`, so de_thread kills the leader and the thread takes its PID.
const leaderC = `
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *self;

static void *waiter(void *arg) { (void)arg; for (;;) pause(); return NULL; }

static void *execer(void *arg) {
	(void)arg;
	usleep(300000);
	char *argv[] = {self, "wait", NULL};
	execv(self, argv);
	perror("execv");
	return NULL;
}

int main(int argc, char **argv) {
	self = argv[0];
	pthread_t t;
	if (argc == 2 && strcmp(argv[1], "pthread-exit") == 0) {
		pthread_create(&t, NULL, waiter, NULL);
		printf("ready\n");
		fflush(stdout);
		pthread_exit(NULL);
	}
	if (argc == 2 && strcmp(argv[1], "exec-thread") == 0) {
		pthread_create(&t, NULL, execer, NULL);
		printf("ready\n");
		fflush(stdout);
		for (;;) pause();
	}
	if (argc == 2 && strcmp(argv[1], "wait") == 0) {
		printf("execd\n");
		fflush(stdout);
		for (;;) pause();
	}
	fprintf(stderr, "usage: claude pthread-exit | exec-thread | wait\n");
	return 2;
}
`

var (
	leaderOnce sync.Once
	leaderPath string
	leaderErr  error
)

// leaderBin builds the C helper once, as "claude" so its comm is an agent's.
func leaderBin(t testing.TB) string {
	t.Helper()
	leaderOnce.Do(func() {
		dir := filepath.Join(filepath.Dir(supervisorBin), "leader") // removed by TestMain
		os.MkdirAll(dir, 0o755)
		src := filepath.Join(dir, "leader.c")
		os.WriteFile(src, []byte(leaderC), 0o644)
		leaderPath = filepath.Join(dir, "claude")
		if out, err := exec.Command("cc", "-O2", "-pthread", "-o", leaderPath, src).CombinedOutput(); err != nil {
			leaderErr = &exec.Error{Name: "cc: " + string(out), Err: err}
		}
	})
	if leaderErr != nil {
		t.Fatalf("build the C helper: %v", leaderErr)
	}
	return leaderPath
}

// threadedAgent is a run of the C helper with a pidfd opened while it is
// known to be ours, and when that pidfd said the whole process was gone.
type threadedAgent struct {
	pid, fd int
	t0      int64 // boottime before the fork
	lines   chan string
	died    chan int64
}

func startThreaded(t *testing.T, mode string) *threadedAgent {
	t.Helper()
	cmd := exec.Command(leaderBin(t), mode)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	a := &threadedAgent{t0: boottime(), lines: make(chan string, 10), died: make(chan int64, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.pid = cmd.Process.Pid
	t.Cleanup(func() { cmd.Wait() }) // registered first, so it runs after pidfdOf's SIGKILL
	a.fd = pidfdOf(t, a.pid)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.lines <- sc.Text()
		}
	}()
	go func() {
		// A pidfd becomes readable when the whole thread group has
		// exited, not when its leader has (pidfd_poll).
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}}, -1)
			if err != unix.EINTR {
				break
			}
		}
		a.died <- boottime()
	}()
	return a
}

func (a *threadedAgent) waitLine(t *testing.T, want string) {
	t.Helper()
	select {
	case l := <-a.lines:
		if l != want {
			t.Fatalf("helper %d said %q, want %q", a.pid, l, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %d: no %q within 10s", a.pid, want)
	}
}

// checkThreadedKill asserts that the daemon signalled a at its deadline,
// counted from its start, and that it did not die before.
func checkThreadedKill(t *testing.T, d *testDaemon, a *threadedAgent, age time.Duration) {
	t.Helper()
	m := d.waitLog(t, age+20*time.Second, killOf(a.pid))
	var died int64
	select {
	case died = <-a.died:
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d survived its kill", a.pid)
	}
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if signalled < deadline || deadline < start+int64(age) {
		t.Errorf("pid %d: start %d, deadline %d, signalled %d: early", a.pid, start, deadline, signalled)
	}
	if start > a.t0+int64(500*time.Millisecond) {
		t.Errorf("pid %d: start %s after the fork: its age restarted", a.pid, time.Duration(start-a.t0))
	}
	if died < a.t0+int64(age) {
		t.Errorf("pid %d died %s after start, before max age %s", a.pid, time.Duration(died-a.t0), age)
	}
	if late := time.Duration(signalled - deadline); late > time.Second {
		t.Errorf("pid %d signalled %s late", a.pid, late)
	}
}

// leaderState is the state letter of /proc/PID/stat (the leader thread's).
func leaderState(pid int) byte {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
		return b[i+2]
	}
	return 0
}

// An agent whose main thread called pthread_exit lives on in its other
// thread: still tracked, killed at its deadline.
func TestIntegrationLeaderThreadExit(t *testing.T) {
	needRoot(t)
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s")
	a := startThreaded(t, "pthread-exit")
	a.waitLine(t, "ready")
	d.waitTracked(t, a.pid)
	// Wait for the leader to be a zombie: its exit event has been sent.
	for end := time.Now().Add(10 * time.Second); leaderState(a.pid) != 'Z'; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("leader of %d not a zombie after 10s (state %q)", a.pid, leaderState(a.pid))
		}
	}
	// The daemon has read the exit event once a later event (a process
	// we start now, tracked) has been read.
	marker := startAgent(t, "claude")
	d.waitTracked(t, marker.pid)
	if len(d.agentsFor(t, a.pid)) != 1 {
		t.Fatalf("agent %d untracked after its leader thread exited", a.pid)
	}
	checkThreadedKill(t, d, a, age)
}

// A non-leader thread's execve: the process keeps its PID, its start and its
// deadline.
func TestIntegrationExecFromThread(t *testing.T) {
	needRoot(t)
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s")
	a := startThreaded(t, "exec-thread")
	a.waitLine(t, "ready")
	before := d.waitTracked(t, a.pid)
	a.waitLine(t, "execd")
	marker := startAgent(t, "claude")
	d.waitTracked(t, marker.pid)
	after := d.agentsFor(t, a.pid)
	// Times are converted from boottime at each request: equal within a
	// millisecond.
	near := func(a, b time.Time) bool { return a.Sub(b).Abs() < time.Millisecond }
	if len(after) != 1 || !near(after[0].StartedAt, before.StartedAt) || !near(after[0].Deadline, before.Deadline) {
		t.Fatalf("after a thread's exec: %+v, before %+v", after, before)
	}
	checkThreadedKill(t, d, a, age)
}
