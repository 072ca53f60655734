//go:build linux && cgo

// The deadline thread. It is a plain pthread, not a Go thread: when its
// timerfd fires it sends the first signals at once, without waiting for the
// Go scheduler to give it a P (which, under load or during a GC mark phase,
// cost up to tens of milliseconds; see timer_cgo.go). Everything it needs
// (deadline and pidfd per agent) lives here, under one mutex.

#define _GNU_SOURCE
#include "alarm.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

typedef struct {
	int64_t  deadline;
	uint64_t id;
	int      fd;
} entry;

struct sv_alarm {
	pthread_mutex_t mu;
	pthread_t       thread;
	int             tfd, efd, stopping, rt, want_rt, started;
	int64_t         window, spun; // spin accounting: second started at, ns spun in it
	entry          *heap;
	int             n, cap;
	sv_fired       *out;
	int             nout, capout;
};

static int64_t now_boot(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// grow returns buf, an array of *cap elements of size bytes each, with
// twice the room (64 elements at first), and sets *cap.
static void *grow(void *buf, int *cap, size_t size) {
	int c = *cap ? 2 * *cap : 64;
	void *p = realloc(buf, c * size);
	if (!p) abort(); // out of memory: nothing sane to do
	*cap = c;
	return p;
}

static int before(const entry *a, const entry *b) {
	return a->deadline < b->deadline || (a->deadline == b->deadline && a->id < b->id);
}

static void swap(entry *h, int i, int j) {
	entry t = h[i];
	h[i] = h[j];
	h[j] = t;
}

static void up(entry *h, int i) {
	while (i > 0) {
		int p = (i - 1) / 2;
		if (!before(&h[i], &h[p])) break;
		swap(h, i, p);
		i = p;
	}
}

static void down(entry *h, int n, int i) {
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && before(&h[l], &h[m])) m = l;
		if (r < n && before(&h[r], &h[m])) m = r;
		if (m == i) return;
		swap(h, i, m);
		i = m;
	}
}

static void remove_at(sv_alarm *a, int i) {
	a->n--;
	if (i == a->n) return;
	a->heap[i] = a->heap[a->n];
	up(a->heap, i);
	down(a->heap, a->n, i);
}

static int find(sv_alarm *a, uint64_t id) {
	for (int i = 0; i < a->n; i++)
		if (a->heap[i].id == id) return i;
	return -1;
}

// lead is how long before a deadline the thread wakes, to spin the rest of
// the way. This kernel runs PREEMPT_NONE: a SCHED_FIFO thread whose timer
// fires while the CPU is in kernel code (forks, exits) waits for a
// preemption point, up to milliseconds under a fork storm. Waking early
// absorbs that; spinning the last stretch costs at most lead of CPU per
// deadline, and nothing when no agent is due.
#define LEAD_NS 2000000LL

// SPIN_BUDGET_NS caps the spinning per second. Deadlines closer together
// than the lead would otherwise keep the thread spinning without a pause,
// and a SCHED_FIFO thread that uses 95 % of a second is throttled by the
// kernel (sched_rt_runtime_us) for the rest of it: 40-80 ms late deadlines
// in a 500-agent run. Past the budget the thread sleeps to each deadline
// exactly, without the lead, until the next second.
#define SPIN_BUDGET_NS 250000000LL

// lead_locked is the lead in force: none once this second's spin budget is
// spent.
static int64_t lead_locked(sv_alarm *a) {
	int64_t now = now_boot();
	if (now - a->window >= 1000000000LL) {
		a->window = now;
		a->spun = 0;
	}
	return a->spun < SPIN_BUDGET_NS ? LEAD_NS : 0;
}

// arm_locked sets the timerfd to lead before the earliest deadline. An absolute time in
// the past fires at once; an all-zero value disarms (timerfd_settime(2)).
static void arm_locked(sv_alarm *a) {
	struct itimerspec its;
	memset(&its, 0, sizeof its);
	if (a->stopping) {
		its.it_value.tv_nsec = 1;
	} else if (a->n > 0) {
		int64_t d = a->heap[0].deadline - lead_locked(a);
		if (d <= 0) d = 1;
		its.it_value.tv_sec = d / 1000000000LL;
		its.it_value.tv_nsec = d % 1000000000LL;
	}
	timerfd_settime(a->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *run(void *arg) {
	sv_alarm *a = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); // Go's signals are for Go's threads
	int rt = 0;
	if (a->want_rt) {
		struct sched_param sp = {.sched_priority = 1};
		rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
	}
	pthread_mutex_lock(&a->mu);
	a->rt = rt;
	a->started = 1;
	pthread_mutex_unlock(&a->mu);
	for (;;) {
		uint64_t ticks;
		if (read(a->tfd, &ticks, sizeof ticks) < 0 && errno != EINTR && errno != EAGAIN) break;
		pthread_mutex_lock(&a->mu);
		if (a->stopping) {
			pthread_mutex_unlock(&a->mu);
			break;
		}
		// Spin to the earliest deadline if it is within the lead, with the
		// mutex released so Go can still add and cancel meanwhile.
		int64_t now = now_boot();
		while (a->n > 0 && !a->stopping && lead_locked(a) > 0) {
			int64_t d = a->heap[0].deadline;
			if (d <= now || d - now > LEAD_NS + 100000) break;
			int64_t from = now;
			pthread_mutex_unlock(&a->mu);
			while ((now = now_boot()) < d) {
#if defined(__x86_64__) || defined(__i386__)
				__builtin_ia32_pause();
#endif
			}
			pthread_mutex_lock(&a->mu);
			now = now_boot();
			a->spun += now - from;
		}
		int fired = 0;
		while (a->n > 0 && a->heap[0].deadline <= now) {
			entry e = a->heap[0];
			remove_at(a, 0);
			int err = 0;
			if (e.fd >= 0) {
				// SIGCONT first: a stopped process cannot act on SIGTERM.
				syscall(SYS_pidfd_send_signal, e.fd, SIGCONT, NULL, 0);
				if (syscall(SYS_pidfd_send_signal, e.fd, SIGTERM, NULL, 0) < 0) err = errno;
			}
			if (a->nout == a->capout) a->out = grow(a->out, &a->capout, sizeof *a->out);
			a->out[a->nout++] = (sv_fired){.id = e.id, .fired = now_boot(), .err = err};
			fired = 1;
		}
		arm_locked(a);
		pthread_mutex_unlock(&a->mu);
		if (fired) {
			uint64_t one = 1;
			(void)!write(a->efd, &one, sizeof one);
		}
	}
	return NULL;
}

sv_alarm *sv_new(int realtime, int *notify_fd, int *err) {
	sv_alarm *a = calloc(1, sizeof *a);
	if (!a) {
		*err = ENOMEM;
		return NULL;
	}
	// Priority inheritance: Go threads (normal priority) take this mutex to
	// add and cancel deadlines. Without it, one preempted while holding it
	// under load kept the SCHED_FIFO thread waiting for a whole time slice
	// (12-18 ms late deadlines with 500 agents starting at once).
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setprotocol(&ma, PTHREAD_PRIO_INHERIT);
	pthread_mutex_init(&a->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	a->want_rt = realtime;
	a->tfd = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC);
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->tfd < 0 || a->efd < 0) {
		*err = errno;
		if (a->tfd >= 0) close(a->tfd);
		if (a->efd >= 0) close(a->efd);
		free(a);
		return NULL;
	}
	int rc = pthread_create(&a->thread, NULL, run, a);
	if (rc != 0) {
		*err = rc;
		close(a->tfd);
		close(a->efd);
		free(a);
		return NULL;
	}
	// Return once the thread runs, so sv_rt tells the truth from the start.
	for (;;) {
		pthread_mutex_lock(&a->mu);
		int started = a->started;
		pthread_mutex_unlock(&a->mu);
		if (started) break;
		usleep(100);
	}
	*notify_fd = a->efd;
	return a;
}

int sv_rt(sv_alarm *a) {
	pthread_mutex_lock(&a->mu);
	int rt = a->rt;
	pthread_mutex_unlock(&a->mu);
	return rt;
}

void sv_add(sv_alarm *a, uint64_t id, int64_t deadline, int pidfd) {
	pthread_mutex_lock(&a->mu);
	if (a->n == a->cap) a->heap = grow(a->heap, &a->cap, sizeof *a->heap);
	a->heap[a->n] = (entry){.deadline = deadline, .id = id, .fd = pidfd};
	up(a->heap, a->n++);
	arm_locked(a);
	pthread_mutex_unlock(&a->mu);
}

// sv_move changes a pending deadline. An entry that fired already is not
// added again: its pidfd may be closed by now.
void sv_move(sv_alarm *a, uint64_t id, int64_t deadline) {
	pthread_mutex_lock(&a->mu);
	int i = find(a, id);
	if (i >= 0) {
		a->heap[i].deadline = deadline;
		up(a->heap, i);
		down(a->heap, a->n, i);
		arm_locked(a);
	}
	pthread_mutex_unlock(&a->mu);
}

int sv_cancel(sv_alarm *a, uint64_t id) {
	pthread_mutex_lock(&a->mu);
	int i = find(a, id);
	if (i >= 0) {
		remove_at(a, i);
		arm_locked(a);
	}
	pthread_mutex_unlock(&a->mu);
	return i >= 0;
}

int sv_drain(sv_alarm *a, sv_fired *buf, int max) {
	pthread_mutex_lock(&a->mu);
	int n = a->nout < max ? a->nout : max;
	memcpy(buf, a->out, n * sizeof *buf);
	memmove(a->out, a->out + n, (a->nout - n) * sizeof *buf);
	a->nout -= n;
	pthread_mutex_unlock(&a->mu);
	return n;
}

// sv_stop ends the thread; fired entries stay for sv_drain.
void sv_stop(sv_alarm *a) {
	pthread_mutex_lock(&a->mu);
	a->stopping = 1;
	arm_locked(a);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
}

// sv_free releases a stopped alarm. The eventfd belongs to Go's os.File.
void sv_free(sv_alarm *a) {
	close(a->tfd);
	free(a->heap);
	free(a->out);
	free(a);
}
