#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long boot(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// member: a session member, no agent: it waits until it is killed.
static int member(void) {
	for (;;) pause();
	return 0;
}

// agent LIFE_MS LEFT FD MEMBER: forks three members that exec MEMBER, lives
// LIFE_MS, then either kills and reaps them (LEFT 0) or writes their PIDs
// to FD and exits without them (LEFT 1): they are leftovers.
static int agent(long life, int left, int fd, const char *mpath) {
	pid_t m[3];
	for (int j = 0; j < 3; j++) {
		m[j] = fork();
		if (m[j] < 0) { perror("fork"); _exit(1); }
		if (m[j] == 0) {
			close(fd);
			execl(mpath, "soak-member", "member", (char *)NULL);
			_exit(127);
		}
	}
	struct timespec ts = { life / 1000, (life % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
	if (left) {
		char line[64];
		int n = snprintf(line, sizeof line, "%d %d %d %d\n", getpid(), m[0], m[1], m[2]);
		if (write(fd, line, n) != n) _exit(3);
		_exit(0);
	}
	for (int j = 0; j < 3; j++) kill(m[j], SIGKILL);
	for (int j = 0; j < 3; j++) waitpid(m[j], NULL, 0);
	_exit(0);
}

static volatile sig_atomic_t stop; // SIGUSR1: start no more sessions
static void onstop(int sig) { (void)sig; stop = 1; }

static unsigned long long rng;
static unsigned long long next(void) {
	rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
	return rng;
}

static unsigned char *mark; // by PID: 1 = a leftover (its agent exited without it)
static long pidmax;
static long made, reaped, other;
static int *owner; // by PID: a leftover's agent (SOAK_DEBUG)

// drain reads the agents' leftover lines that have come.
static void drain(int fd) {
	static char buf[65536];
	static size_t have;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
		if (n <= 0) break;
		have += n;
		char *p = buf, *nl;
		while ((nl = memchr(p, '\n', buf + have - p))) {
			*nl = 0;
			char *s = p, *e;
			long apid = strtol(s, &e, 10);
			s = e;
			for (int j = 0; j < 3; j++) {
				long pid = strtol(s, &e, 10);
				if (e == s) break;
				if (pid > 0 && pid < pidmax) { mark[pid] = 1; made++; if (owner) owner[pid] = apid; }
				s = e;
			}
			p = nl + 1;
		}
		have = buf + have - p;
		memmove(buf, p, have);
	}
}

// gen: N sessions, CONC at a time (see soakgenC's comment).
static int gen(const char *apath, const char *mpath, long n, int conc, int minms, int maxms, int gapfrom, int gapto, int leftpct, unsigned long long seed) {
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	// Niced, with all it starts: the load the daemon is measured under
	// must not starve it (on a shared machine, neither may anything else).
	setpriority(PRIO_PROCESS, 0, 10);
	FILE *pm = fopen("/proc/sys/kernel/pid_max", "r");
	if (!pm || fscanf(pm, "%ld", &pidmax) != 1) pidmax = 4194304;
	if (pm) fclose(pm);
	pidmax++;
	mark = calloc(pidmax, 1);
	if (getenv("SOAK_DEBUG")) owner = calloc(pidmax, sizeof(int));
	int pfd[2];
	if (pipe2(pfd, O_NONBLOCK) < 0) { perror("pipe"); return 1; }
	fcntl(pfd[0], F_SETPIPE_SZ, 1 << 20);
	fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
	struct sigaction sa = { .sa_handler = onstop }; // no SA_RESTART: it ends a wait
	sigaction(SIGUSR1, &sa, NULL);
	rng = seed ? seed : 88172645463325252ULL;
	pid_t self = getpid();
	pid_t *slot = calloc(conc, sizeof(pid_t));
	long started = 0, exited = 0, killed = 0, step = n / 20 > 0 ? n / 20 : 1;
	long long last = 0;
	int live = 0;
	char lifes[24], lefts[4], fds[16];
	snprintf(fds, sizeof fds, "%d", pfd[1]);
	for (;;) {
		if (stop && started < n) n = started;
		while (live < conc && started < n) {
			long life;
			do life = minms + (long)(next() % (unsigned long long)(maxms - minms + 1));
			while (life > gapfrom && life < gapto);
			int left = (int)(next() % 100) < leftpct;
			snprintf(lifes, sizeof lifes, "%ld", life);
			snprintf(lefts, sizeof lefts, "%d", left);
			pid_t a = fork();
			if (a < 0) { perror("fork"); return 1; }
			if (a == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
				if (getppid() != self) _exit(0);
				execl(apath, "soak-agent", "agent", lifes, lefts, fds, mpath, (char *)NULL);
				_exit(127);
			}
			for (int i = 0; i < conc; i++) if (slot[i] == 0) { slot[i] = a; break; }
			live++;
			started++;
			if (started % step == 0) { printf("progress %ld\n", started); fflush(stdout); }
		}
		if (live == 0 && started == n && !last) last = boot();
		if (last && boot() - last > 5000000000LL) break; // leftovers the daemon left alone
		int st;
		pid_t p = waitpid(-1, &st, last ? WNOHANG : 0);
		if (p < 0 && errno == EINTR) continue;
		if (p < 0) break; // ECHILD: every process made is gone
		if (p == 0) { usleep(10000); continue; }
		int isagent = 0;
		for (int i = 0; i < conc; i++) if (slot[i] == p) { slot[i] = 0; isagent = 1; break; }
		if (isagent) {
			live--;
			if (WIFSIGNALED(st)) killed++;
			else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) exited++;
			else { fprintf(stderr, "soakgen: agent %d ended with status %#x\n", p, st); other++; }
			continue;
		}
		drain(pfd[0]); // a leftover's line comes before its agent's exit
		if (p < pidmax && mark[p]) {
			mark[p] = 0;
			if (WIFSIGNALED(st)) reaped++;
			else other++;
		}
		// else: a member of an agent killed at max age, killed with its tree
	}
	drain(pfd[0]);
	// Still here 5 s after the last agent: leftovers missed; killed by us.
	long missed = 0, stray = 0;
	char path[64], buf[65536];
	snprintf(path, sizeof path, "/proc/%d/task/%d/children", self, self);
	FILE *f = fopen(path, "r");
	size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f) fclose(f);
	buf[got] = 0;
	for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
		long pid = atol(tok);
		if (kill(pid, SIGKILL) == 0) {
			if (pid < pidmax && mark[pid]) { missed++; mark[pid] = 0; if (getenv("SOAK_DEBUG")) fprintf(stderr, "missed %ld agent %d\n", pid, owner[pid]); } else stray++;
		}
	}
	while (wait(NULL) > 0) {}
	printf("done %ld %ld %ld %ld %ld %ld %ld %ld\n", started, exited, killed, made, reaped, missed, stray, other);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 2 && strcmp(argv[1], "member") == 0) return member();
	if (argc == 6 && strcmp(argv[1], "agent") == 0) return agent(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), argv[5]);
	if (argc == 12 && strcmp(argv[1], "gen") == 0)
		return gen(argv[2], argv[3], atol(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]), atoi(argv[8]), atoi(argv[9]),
			atoi(argv[10]), strtoull(argv[11], NULL, 10));
	fprintf(stderr, "usage: soakgen gen AGENT MEMBER N CONC MIN_MS MAX_MS GAP_FROM GAP_TO LEFT_PCT SEED | agent LIFE_MS LEFT FD MEMBER | member\n");
	return 2;
}
