// The reaper thread outside the Go scheduler: see reaper_cgo.go.
#ifndef SUPERVISOR_INITD_REAPER_H
#define SUPERVISOR_INITD_REAPER_H
#include <stdint.h>

typedef struct sv_reaper sv_reaper;

// What sv_reaper_take hands to Go.
enum {
	SV_REAPER_STOPPED = 0, // sv_reaper_stop was called: nothing more comes
	SV_REAPER_CHILD   = 1, // an exited child the thread leaves to Go (CMD, an owned one)
	SV_REAPER_ERROR   = 2, // waitid failed; arg is errno
	SV_REAPER_NONE    = 3, // nothing (yet)
};

sv_reaper *sv_reaper_start(int cmd_pid, uintptr_t handle, int *notify_fd, int *err);
void     sv_reaper_report(sv_reaper *r, int on);
void     sv_reaper_own_begin(sv_reaper *r);
void     sv_reaper_own_end(sv_reaper *r, int pid);
void     sv_reaper_disown(sv_reaper *r, int pid);
int      sv_reaper_take(sv_reaper *r, int *arg);
void     sv_reaper_ack(sv_reaper *r);
uint64_t sv_reaper_reaped(sv_reaper *r);
void     sv_reaper_stop(sv_reaper *r);
#endif
