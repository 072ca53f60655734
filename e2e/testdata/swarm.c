#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

static void rename_loop(void) {
	for (int i = 0;; i++) {
		prctl(PR_SET_NAME, (i & 1) ? "swarm-a" : "swarm-b", 0, 0, 0);
		sleep(1);
	}
}

static void die_with_parent(pid_t parent) {
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent) _exit(1);
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: swarm N MIB FIFO\n"); return 2; }
	int n = atoi(argv[1]);
	long mib = atol(argv[2]);
	die_with_parent(getppid());
	pid_t self = getpid();
	pid_t h = fork();
	if (h < 0) { perror("fork"); return 1; }
	if (h == 0) {
		die_with_parent(self);
		char c;
		int fd = open(argv[3], O_RDONLY);
		if (fd < 0 || read(fd, &c, 1) != 1) { perror("fifo"); _exit(1); }
		size_t sz = (size_t)mib << 20;
		char *m = malloc(sz);
		if (!m) { perror("malloc"); _exit(1); }
		for (size_t i = 0; i < sz; i += 4096) m[i] = 1;
		printf("held %d\n", getpid());
		fflush(stdout);
		rename_loop();
	}
	printf("child %d holder\n", h);
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0) { perror("fork"); return 1; }
		if (p == 0) {
			die_with_parent(self);
			rename_loop();
		}
	}
	printf("renamers %d\n", n);
	fflush(stdout);
	rename_loop();
	return 0;
}
