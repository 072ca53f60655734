#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(long long d) {
	if (d <= 0) return;
	struct timespec ts = { d / 1000000000LL, d % 1000000000LL };
	nanosleep(&ts, NULL);
}

static int orphans(long n, double rate) {
	long long t0 = now();
	for (long i = 0; i < n; i++) {
		if (rate > 0) sleep_ns(t0 + (long long)(i * 1e9 / rate) - now());
		pid_t mid = fork();
		if (mid < 0) { perror("fork"); return 1; }
		if (mid == 0) {
			pid_t me = getpid();
			pid_t g = fork();
			if (g == 0) {
				// Until the middle has exited and we were reparented (at most 1 s).
				for (int k = 0; k < 10000 && getppid() == me; k++) usleep(100);
				_exit(0);
			}
			_exit(g < 0);
		}
		int st;
		if (waitpid(mid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "inithelper: a middle child failed\n");
			return 1;
		}
	}
	printf("orphans %ld %.3f\n", n, (now() - t0) / 1e9);
	fflush(stdout);
	return 0;
}

struct counts { int all, init, live; };

static struct counts scan(const char *comm) {
	struct counts c = {0, 0, 0};
	DIR *d = opendir("/proc");
	if (!d) { perror("/proc"); exit(1); }
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
		char path[300], buf[1024];
		snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f) continue;
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = 0;
		char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
		if (!lp || !rp || rp < lp || !rp[1]) continue;
		*rp = 0;
		char state;
		int ppid;
		if (sscanf(rp + 2, "%c %d", &state, &ppid) != 2) continue;
		if (state == 'Z') {
			c.all++;
			if (ppid == 1) c.init++;
		} else if (ppid == 1 && strcmp(lp + 1, comm) == 0) {
			c.live++;
		}
	}
	closedir(d);
	return c;
}

int main(int argc, char **argv) {
	if (argc == 4 && strcmp(argv[1], "orphans") == 0)
		return orphans(atol(argv[2]), atof(argv[3]));
	if (argc == 4 && strcmp(argv[1], "zombies") == 0) {
		long long t0 = now(), end = t0 + atoll(argv[2]) * 1000000LL;
		struct counts c;
		for (;;) {
			c = scan(argv[3]);
			if ((c.init == 0 && c.live == 0) || now() > end) break;
			sleep_ns(10000000LL);
		}
		printf("zombies %d init %d orphans %d waited_ms %lld\n", c.all, c.init, c.live, (now() - t0) / 1000000LL);
		fflush(stdout);
		return 0;
	}
	fprintf(stderr, "usage: inithelper orphans N RATE | zombies MS COMM\n");
	return 2;
}
