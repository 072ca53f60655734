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
