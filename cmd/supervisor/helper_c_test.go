package main

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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long boot(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
	if (argc == 4 && strcmp(argv[1], "burst") == 0) {
		int n = atoi(argv[3]);
		long long first = boot();
		for (int i = 0; i < n; i++) {
			pid_t p = fork();
			if (p == 0) {
				// Only the children take the name: they are the agents.
				prctl(PR_SET_NAME, argv[2], 0, 0, 0);
				for (;;) pause();
			}
			if (p < 0) { perror("fork"); return 1; }
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
	forkerOnce sync.Once
	forkerPath string
	forkerErr  error
)

// forker builds the C helper once (cc is on every machine of this kind: it
// is what cgo uses).
func forker(t testing.TB) string {
	t.Helper()
	forkerOnce.Do(func() {
		dir := filepath.Dir(supervisorBin) // removed by TestMain
		src := filepath.Join(dir, "forker.c")
		os.WriteFile(src, []byte(forkerC), 0o644)
		forkerPath = filepath.Join(dir, "forker")
		if out, err := exec.Command("cc", "-O2", "-o", forkerPath, src).CombinedOutput(); err != nil {
			forkerErr = &exec.Error{Name: "cc", Err: err}
			_ = out
		}
	})
	if forkerErr != nil {
		t.Fatalf("build the C forker: %v", forkerErr)
	}
	return forkerPath
}
