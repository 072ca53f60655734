package e2e

import (
	"fmt"
	"os/exec"
	"testing"
	"time"
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

// leaderBin builds the helper, as "claude" so its comm is an agent's.
func leaderBin(t testing.TB) string { return buildC(t, "leader/claude", leaderC, "-pthread") }

// startThreaded runs the C helper in mode and waits for its "ready".
func startThreaded(t *testing.T, mode string) *agent {
	t.Helper()
	a := runAgent(t, exec.Command(leaderBin(t), mode))
	a.waitLine(t, "ready", 10*time.Second)
	return a
}

// checkThreadedKill asserts that the daemon signalled a at its deadline,
// counted from its start (which the thread's exit or exec did not move),
// and that it did not die before. Its death is the whole thread group's:
// the exit of a leader whose threads run on is not reported to its parent
// (delay_group_leader, kernel/exit.c).
func checkThreadedKill(t *testing.T, d *testDaemon, a *agent, age time.Duration) {
	t.Helper()
	m := d.waitLog(t, age+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
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
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s")
	a := startThreaded(t, "pthread-exit")
	d.waitTracked(t, a.pid)
	// Wait for the leader to be a zombie: its exit event has been sent.
	waitFor(t, 10*time.Second, fmt.Sprintf("the leader of %d a zombie", a.pid), func() bool {
		st, _ := statField(a.pid, 0)
		return st == "Z"
	})
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
	if ranApart(t) {
		return
	}
	const age = 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s")
	a := startThreaded(t, "exec-thread")
	before := d.waitTracked(t, a.pid)
	a.waitLine(t, "execd", 10*time.Second)
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
