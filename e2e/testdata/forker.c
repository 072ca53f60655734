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

int main(int argc, char **argv) {
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
	fprintf(stderr, "usage: forker burst NAME N [stubborn] | hold N | storm SECONDS | sessions NAME AGENTS CHILDREN\n");
	return 2;
}
