package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// forkerC is a small C helper for the benchmarks, where Go is too slow to
// fork: `forker burst NAME N` names itself NAME, forks N children that wait
// in pause() (so their deadlines fall within milliseconds), prints "ready"
// and then, for each child it reaps, "exit PID BOOTTIME_NS"; `forker storm
// SECONDS` forks children that exit at once, as fast as it can, and prints
// how many; `forker hold N` forks N children that pause() and prints
// "ready".
const forkerC = `
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *burst_name;

// A burst child: only the children take the name, they are the agents.
static int burst_child(void *arg) {
	(void)arg;
	prctl(PR_SET_NAME, burst_name, 0, 0, 0);
	for (;;) pause();
	return 0;
}

static long long boot(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
	if (argc == 4 && strcmp(argv[1], "burst") == 0) {
		int n = atoi(argv[3]);
		burst_name = argv[2];
		// clone(CLONE_VM) instead of fork: no page tables to copy, so a
		// thousand processes start within a few milliseconds. Each is a
		// process of its own (no CLONE_THREAD) with its own small stack.
		char *stacks = malloc((size_t)n * 16384);
		long long first = boot();
		for (int i = 0; i < n; i++) {
			pid_t p = clone(burst_child, stacks + (size_t)(i + 1) * 16384, CLONE_VM | SIGCHLD, NULL);
			if (p < 0) { perror("clone"); return 1; }
		}
		printf("ready %lld %lld\n", first, boot());
		fflush(stdout);
		for (int i = 0; i < n; i++) {
			pid_t p = wait(NULL);
			if (p < 0) break;
			printf("exit %d %lld\n", p, boot());
		}
		fflush(stdout);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "hold") == 0) {
		int n = atoi(argv[2]);
		for (int i = 0; i < n; i++) {
			pid_t p = fork();
			if (p == 0) { for (;;) pause(); }
			if (p < 0) { perror("fork"); return 1; }
		}
		printf("ready\n");
		fflush(stdout);
		for (;;) pause();
	}
	if (argc == 3 && strcmp(argv[1], "storm") == 0) {
		long long end = boot() + (long long)(atof(argv[2]) * 1e9);
		long n = 0;
		while (boot() < end) {
			for (int i = 0; i < 64; i++) {
				pid_t p = fork();
				if (p == 0) _exit(0);
				if (p > 0) n++;
			}
			while (waitpid(-1, NULL, WNOHANG) > 0) {}
		}
		while (wait(NULL) > 0) {}
		printf("%ld\n", n);
		return 0;
	}
	fprintf(stderr, "usage: forker burst NAME N | hold N | storm SECONDS\n");
	return 2;
}
`

var (
	cHelpersMu sync.Mutex
	cHelpers   = map[string]string{} // path under helperDir: the binary, or "" if cc failed
)

// buildC builds a C helper from src, once per test process, at path
// under helperDir (the directory part lets a helper have an agent's name:
// leader/claude). cc is on every machine of this kind: it is what cgo
// uses. flags are cc's too.
func buildC(t testing.TB, path, src string, flags ...string) string {
	t.Helper()
	cHelpersMu.Lock()
	defer cHelpersMu.Unlock()
	bin, done := cHelpers[path]
	if !done {
		bin = filepath.Join(helperDir, path)
		os.MkdirAll(filepath.Dir(bin), 0o755)
		if err := os.WriteFile(bin+".c", []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-O2", "-o", bin, bin + ".c"}, flags...)
		if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
			t.Logf("cc %s: %v\n%s", path, err, out)
			bin = ""
		}
		cHelpers[path] = bin
	}
	if bin == "" {
		t.Fatalf("the C helper %s does not build (cc's output is logged at its first build)", path)
	}
	return bin
}

// forker builds the forker.
func forker(t testing.TB) string { return buildC(t, "forker", forkerC) }
