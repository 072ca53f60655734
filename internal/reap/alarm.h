// A deadline thread outside the Go scheduler: see timer_cgo.go.
#ifndef SUPERVISOR_ALARM_H
#define SUPERVISOR_ALARM_H
#include <stdint.h>

typedef struct sv_alarm sv_alarm;

typedef struct {
	uint64_t id;
	int64_t  fired; // CLOCK_BOOTTIME ns after the signals were sent
	int32_t  err;   // errno of SIGTERM, 0 on success or when no signal was sent
} sv_fired;

sv_alarm *sv_new(int realtime, int *notify_fd, int *err);
int  sv_rt(sv_alarm *a);
void sv_add(sv_alarm *a, uint64_t id, int64_t deadline, int pidfd);
void sv_move(sv_alarm *a, uint64_t id, int64_t deadline);
int  sv_cancel(sv_alarm *a, uint64_t id);
int  sv_drain(sv_alarm *a, sv_fired *buf, int max);
void sv_stop(sv_alarm *a);
void sv_free(sv_alarm *a);
#endif
