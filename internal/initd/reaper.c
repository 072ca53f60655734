//go:build linux && cgo

// The reaper thread: init's wait-and-reap loop as a plain pthread, outside
// the Go scheduler (reaper_cgo.go says why). It reaps every exited child
// itself except CMD and the children os/exec owns, which it hands to Go
// (an eventfd, sv_reaper_take) and waits for Go to be done with.

#define _GNU_SOURCE
#include "reaper.h"
#include "_cgo_export.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// How long the thread sleeps while we have no child at all (waitid cannot
// sleep then), unless a child of our own is started meanwhile (own_end).
#define NOCHILD_NS (20 * 1000 * 1000)

struct sv_reaper {
	pthread_mutex_t  mu;
	pthread_cond_t   cond; // owning, handoff, stopped changed
	pthread_t        thread;
	uintptr_t        handle; // the Go side, for svInitdExited
	int              cmd;
	int              report;  // call svInitdExited before each reap
	int              owning;  // Own calls between their own_begin and own_end
	int             *owned;   // PIDs os/exec waits for
	int              nowned, capowned;
	int              efd;     // eventfd: Go's wake-up for a hand-off and for stop
	int              handoff; // a hand-off Go has not acknowledged
	int              kind, arg;
	int              stopped;
	uint64_t         disowns; // Disown calls so far (atomic)
	uint64_t         reaped;  // atomic
	struct sigaction chld;    // SIGCHLD's disposition before start
};

static void notify(sv_reaper *r) {
	uint64_t one = 1;
	(void)!write(r->efd, &one, sizeof one);
}

static int owned_locked(sv_reaper *r, int pid) {
	for (int i = 0; i < r->nowned; i++)
		if (r->owned[i] == pid) return 1;
	return 0;
}

// handoff_locked hands kind to Go and waits until Go acknowledges it (or
// stop). It reports whether the thread is to go on.
static int handoff_locked(sv_reaper *r, int kind, int arg) {
	r->handoff = 1;
	r->kind = kind;
	r->arg = arg;
	notify(r);
	while (r->handoff && !r->stopped) pthread_cond_wait(&r->cond, &r->mu);
	return !r->stopped;
}

// nochild_locked sleeps NOCHILD_NS, or until a child is started or stop.
static int nochild_locked(sv_reaper *r) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += NOCHILD_NS;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	int owning = r->owning, n = r->nowned;
	while (!r->stopped && r->owning == owning && r->nowned == n)
		if (pthread_cond_timedwait(&r->cond, &r->mu, &ts) == ETIMEDOUT) break;
	return !r->stopped;
}

static void *run(void *arg) {
	sv_reaper *r = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); // Go's signals are for Go's threads
	for (;;) {
		siginfo_t si;
		memset(&si, 0, sizeof si);
		uint64_t disowns = __atomic_load_n(&r->disowns, __ATOMIC_ACQUIRE);
		// Sleeps until a child has exited; reaps nothing (WNOWAIT).
		int rc = waitid(P_ALL, 0, &si, WEXITED | WNOWAIT | __WALL);
		int err = rc < 0 ? errno : 0;
		if (err == EINTR) continue;
		pthread_mutex_lock(&r->mu);
		if (r->stopped) break;
		if (err == ECHILD) {
			if (!nochild_locked(r)) break;
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		if (err != 0) {
			if (!handoff_locked(r, SV_REAPER_ERROR, err) || !nochild_locked(r)) break;
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		int pid = si.si_pid;
		// A child os/exec is starting may be this one: it is registered
		// once its Own call ends.
		while (r->owning > 0 && !r->stopped) pthread_cond_wait(&r->cond, &r->mu);
		if (r->stopped) break;
		if (pid == r->cmd || owned_locked(r, pid)) {
			// Go reaps CMD (its status, the forwarder's lock) and waits
			// for os/exec to reap what it owns, reaping the others
			// meanwhile; it acknowledges when no exited child is left.
			if (!handoff_locked(r, SV_REAPER_CHILD, pid)) break;
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		if (__atomic_load_n(&r->disowns, __ATOMIC_ACQUIRE) != disowns) {
			// An owned child disowned since the peek may be this one,
			// reaped by os/exec meanwhile: is it still an exited child?
			siginfo_t again;
			memset(&again, 0, sizeof again);
			if (waitid(P_PID, pid, &again, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 || again.si_pid != pid) {
				pthread_mutex_unlock(&r->mu);
				continue;
			}
		}
		int report = r->report;
		pthread_mutex_unlock(&r->mu);
		// Told while the zombie still holds its PID (no lock held: Go may
		// need a while to run it).
		if (report) svInitdExited(r->handle, pid);
		pthread_mutex_lock(&r->mu);
		if (r->stopped) break;
		memset(&si, 0, sizeof si);
		while (waitid(P_PID, pid, &si, WEXITED | WNOHANG | __WALL) < 0 && errno == EINTR) {
		}
		if (si.si_pid == pid) __atomic_add_fetch(&r->reaped, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

sv_reaper *sv_reaper_start(int cmd_pid, uintptr_t handle, int *notify_fd, int *err) {
	sv_reaper *r = calloc(1, sizeof *r);
	if (!r) {
		*err = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	r->cmd = cmd_pid;
	r->handle = handle;
	// SIGCHLD at its default action, which is to discard it: the kernel
	// then neither queues it nor wakes a thread to run Go's handler (which
	// does nothing with it) at every exit. waitid is woken all the same.
	// (Ignoring it, SIG_IGN, would make the kernel reap our children
	// itself: no exit status for CMD or os/exec.)
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &dfl, &r->chld);
	r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->efd < 0) {
		*err = errno;
		sigaction(SIGCHLD, &r->chld, NULL);
		free(r);
		return NULL;
	}
	pthread_attr_t pa;
	pthread_attr_init(&pa);
	pthread_attr_setstacksize(&pa, 256 * 1024);
	int rc = pthread_create(&r->thread, &pa, run, r);
	pthread_attr_destroy(&pa);
	if (rc != 0) {
		sigaction(SIGCHLD, &r->chld, NULL);
		close(r->efd);
		*err = rc;
		free(r);
		return NULL;
	}
	pthread_detach(r->thread);
	*notify_fd = r->efd;
	return r;
}

void sv_reaper_report(sv_reaper *r, int on) {
	pthread_mutex_lock(&r->mu);
	r->report = on;
	pthread_mutex_unlock(&r->mu);
}

void sv_reaper_own_begin(sv_reaper *r) {
	pthread_mutex_lock(&r->mu);
	r->owning++;
	pthread_mutex_unlock(&r->mu);
}

void sv_reaper_own_end(sv_reaper *r, int pid) {
	pthread_mutex_lock(&r->mu);
	if (pid > 0) {
		if (r->nowned == r->capowned) {
			int c = r->capowned ? 2 * r->capowned : 16;
			int *p = realloc(r->owned, c * sizeof *p);
			if (!p) abort(); // out of memory: nothing sane to do
			r->owned = p;
			r->capowned = c;
		}
		r->owned[r->nowned++] = pid;
	}
	r->owning--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

void sv_reaper_disown(sv_reaper *r, int pid) {
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nowned; i++) {
		if (r->owned[i] == pid) {
			r->owned[i] = r->owned[--r->nowned];
			__atomic_add_fetch(&r->disowns, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	pthread_mutex_unlock(&r->mu);
}

int sv_reaper_take(sv_reaper *r, int *arg) {
	pthread_mutex_lock(&r->mu);
	int kind = r->stopped ? SV_REAPER_STOPPED : r->handoff && r->kind != 0 ? r->kind : SV_REAPER_NONE;
	*arg = r->arg;
	r->kind = 0; // taken; handoff stays set until sv_reaper_ack
	pthread_mutex_unlock(&r->mu);
	return kind;
}

void sv_reaper_ack(sv_reaper *r) {
	pthread_mutex_lock(&r->mu);
	r->handoff = 0;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

uint64_t sv_reaper_reaped(sv_reaper *r) { return __atomic_load_n(&r->reaped, __ATOMIC_RELAXED); }

// sv_reaper_stop: nothing is reaped once it returns. The thread may stay
// asleep in waitid (nothing interrupts it); it ends when it wakes. r is
// never freed: Go may still read the counter.
void sv_reaper_stop(sv_reaper *r) {
	pthread_mutex_lock(&r->mu);
	if (!r->stopped) {
		r->stopped = 1;
		sigaction(SIGCHLD, &r->chld, NULL);
		notify(r);
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}
