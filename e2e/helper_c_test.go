package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// forkerC is a small C helper for where Go is too slow to fork: `forker
// burst NAME N [stubborn]` clones N children that wait in pause() (so
// their deadlines fall within milliseconds), name themselves NAME, die
// with the forker (PR_SET_PDEATHSIG: a failed run leaves nothing behind)
// and, with stubborn, ignore SIGTERM; it prints "ready FIRST LAST"
// (CLOCK_BOOTTIME ns of the first and last clone), then "exit PID
// BOOTTIME_NS" for each child it reaps, then "done". `forker storm
// SECONDS` forks children that exit at once, as fast as it can, and prints
// how many; `forker hold N` forks N children that pause() and prints
// "ready".
//
// `forker sessions NAME A C` builds sessions for the leftover benchmarks:
// it forks A agents; each forks C children that ignore SIGTERM and
// pause(), then renames itself NAME (so its children, forked first, keep
// the helper's name and are no agents themselves) and pause()s. The agents
// die with the helper (PR_SET_PDEATHSIG); their children must outlive them,
// so the benchmark kills the whole process group at cleanup. Once every
// agent is renamed it prints "ready". Then a line "exit STAGGER_US" on its
// stdin sends SIGUSR1 (whose default action ends the agent) to each agent
// in turn, STAGGER_US apart, printing "sent PID BOOTTIME_NS" just before
// each: no agent exits before its line's time. It reaps them and prints
// "done". With SESSFORKER_WAKE_MS set, the children wake that often and
// burn SESSFORKER_BURN_US of CPU each time (working processes).
//
// `forker soak NAME N CONC MIN_MS MAX_MS LEFT_PCT SEED` runs N short
// sessions, CONC at a time, for the soak benchmark: as a child subreaper,
// it forks an agent that renames itself NAME and forks three children
// (renamed soak-member; the session has four members), lives a time drawn uniformly from
// MIN_MS to MAX_MS (SEED seeds the draw) and exits. The children die with
// their agent (PR_SET_PDEATHSIG), except in LEFT_PCT percent of the
// sessions, whose children pause() on as leftovers. It prints "progress K"
// each time another twentieth of the sessions has started, and "done K
// ORPHANS MISSED" once every process it made is gone and reaped (ORPHANS:
// the leftovers it reaped; MISSED: those still alive 5 s after the last
// agent's exit, which it kills itself).
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
static pid_t burst_parent;

// A burst child: only the children take the name, they are the agents.
static int burst_child(void *arg) {
	(void)arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != burst_parent) _exit(0); // the forker died before the prctl
	prctl(PR_SET_NAME, burst_name, 0, 0, 0);
	for (;;) pause();
	return 0;
}

static long long boot(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int sessions(const char *name, int na, int nc) {
	pid_t helper = getpid();
	pid_t *agents = calloc(na, sizeof(pid_t));
	int sync[2];
	if (pipe(sync) < 0) { perror("pipe"); return 1; }
	for (int i = 0; i < na; i++) {
		pid_t a = fork();
		if (a < 0) { perror("fork"); return 1; }
		if (a == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
			if (getppid() != helper) _exit(0);
			for (int j = 0; j < nc; j++) {
				pid_t c = fork();
				if (c < 0) { perror("fork"); _exit(1); }
				if (c == 0) {
					signal(SIGTERM, SIG_IGN);
					const char *w = getenv("SESSFORKER_WAKE_MS"), *u = getenv("SESSFORKER_BURN_US");
					long burn = u ? atol(u) * 1000 : 0;
					if (w) for (;;) {
						usleep(atol(w) * 1000);
						struct timespec t0, t1;
						clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
						do clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
						while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < burn);
					}
					for (;;) pause();
				}
			}
			prctl(PR_SET_NAME, name, 0, 0, 0);
			if (write(sync[1], "x", 1) != 1) _exit(1);
			for (;;) pause();
		}
		agents[i] = a;
	}
	close(sync[1]);
	char b;
	for (int i = 0; i < na; i++) {
		if (read(sync[0], &b, 1) != 1) { fprintf(stderr, "an agent died\n"); return 1; }
	}
	printf("ready\n");
	fflush(stdout);
	long stagger;
	if (scanf("exit %ld", &stagger) != 1) return 0;
	for (int i = 0; i < na; i++) {
		if (i > 0) usleep(stagger);
		printf("sent %d %lld\n", agents[i], boot());
		fflush(stdout);
		kill(agents[i], SIGUSR1);
	}
	while (wait(NULL) > 0) {}
	printf("done\n");
	fflush(stdout);
	return 0;
}

static unsigned long long soak_rng;
static unsigned long long soak_next(void) {
	soak_rng ^= soak_rng << 13; soak_rng ^= soak_rng >> 7; soak_rng ^= soak_rng << 17;
	return soak_rng;
}

static int soak(const char *name, long n, int conc, int minms, int maxms, int leftpct, unsigned long long seed) {
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	soak_rng = seed ? seed : 88172645463325252ULL;
	pid_t gen = getpid();
	pid_t *slot = calloc(conc, sizeof(pid_t));
	long started = 0, orphans = 0, step = n / 20 > 0 ? n / 20 : 1;
	long long last = 0;
	int live = 0;
	for (;;) {
		while (live < conc && started < n) {
			long life = minms + (long)(soak_next() % (unsigned long long)(maxms - minms + 1));
			int left = (int)(soak_next() % 100) < leftpct;
			pid_t a = fork();
			if (a < 0) { perror("fork"); return 1; }
			if (a == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
				if (getppid() != gen) _exit(0);
				pid_t me = getpid();
				prctl(PR_SET_NAME, name, 0, 0, 0);
				for (int j = 0; j < 3; j++) {
					pid_t c = fork();
					if (c == 0) {
						prctl(PR_SET_NAME, "soak-member", 0, 0, 0);
						if (!left) {
							prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
							if (getppid() != me) _exit(0);
						}
						for (;;) pause();
					}
				}
				usleep(life * 1000);
				_exit(0);
			}
			for (int i = 0; i < conc; i++) if (slot[i] == 0) { slot[i] = a; break; }
			live++;
			started++;
			if (started % step == 0) { printf("progress %ld\n", started); fflush(stdout); }
		}
		if (live == 0 && started == n && !last) last = boot();
		if (last && boot() - last > 5000000000LL) break; // leftovers the daemon left alone
		pid_t p = waitpid(-1, NULL, last ? WNOHANG : 0);
		if (p < 0) break; // ECHILD: every process made is gone
		if (p == 0) { usleep(10000); continue; }
		int agent = 0;
		for (int i = 0; i < conc; i++) if (slot[i] == p) { slot[i] = 0; agent = 1; break; }
		if (agent) live--; else orphans++;
	}
	// Still here 5 s after the last agent: missed; killed by us.
	long missed = 0;
	char path[64], buf[65536];
	snprintf(path, sizeof path, "/proc/%d/task/%d/children", gen, gen);
	FILE *f = fopen(path, "r");
	size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f) fclose(f);
	buf[got] = 0;
	for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
		if (kill(atoi(tok), SIGKILL) == 0) missed++;
	}
	while (wait(NULL) > 0) {}
	printf("done %ld %ld %ld\n", started, orphans, missed);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 9 && strcmp(argv[1], "soak") == 0)
		return soak(argv[2], atol(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]), strtoull(argv[8], NULL, 10));
	if (argc == 5 && strcmp(argv[1], "sessions") == 0)
		return sessions(argv[2], atoi(argv[3]), atoi(argv[4]));
	if ((argc == 4 || (argc == 5 && strcmp(argv[4], "stubborn") == 0)) && strcmp(argv[1], "burst") == 0) {
		int n = atoi(argv[3]);
		burst_name = argv[2];
		burst_parent = getpid();
		if (argc == 5) signal(SIGTERM, SIG_IGN); // inherited by the children
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
			fflush(stdout);
		}
		printf("done\n");
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
	fprintf(stderr, "usage: forker burst NAME N [stubborn] | hold N | storm SECONDS | sessions NAME AGENTS CHILDREN | soak NAME N CONC MIN_MS MAX_MS LEFT_PCT SEED\n");
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
