//go:build linux && cgo

package initd

// #include "reaper.h"
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"runtime/cgo"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// reaper is the wait-and-reap loop as a pthread outside the Go scheduler
// (reaper.c), as the deadline thread is (internal/reap, alarm.c). It sleeps
// in a blocking waitid(P_ALL, WEXITED|WNOWAIT), as tini sleeps in
// sigtimedwait, and reaps each exited child with waitid(P_PID) itself: an
// orphan costs the kernel's wake-up of that one thread and two system
// calls. As a goroutine in waitid (reapLoop, the build without cgo), every
// exit also woke the Go scheduler around the call: the processor handed off
// during the wait taken back, sysmon polling every 20 µs for a millisecond
// after each wake-up from idle; and SIGCHLD woke a thread to run Go's
// handler, which did nothing with it. The thread sets SIGCHLD to its
// default action (discarded by the kernel: waitid is woken all the same)
// until Close.
//
// What crosses into Go: each child's exit before it is reaped, when OnExit
// is set (a cgo callback from the thread, svInitdExited: the zombie still
// holds its PID); and, handed over through an eventfd and waited for
// (sv_reaper_take), CMD's exit (its status and the forwarder's lock are
// Go's) and the exits of the children os/exec owns, which Go's reapAll
// waits out as in the build without cgo. The thread checks every exited
// child against the owned set kept on its side (Own, Disown): an Own call
// in progress holds it back until the forked child is registered, as the
// registry's lock does for reapAll.
//
// The callback keeps the cost low only if the thread keeps its processor
// (P) from one exit to the next: the runtime leaves it attached while the
// thread is back in C, unless sysmon takes it, which it does when no other
// P is idle (hence the goroutine taking hand-offs waits in the netpoller,
// not in C) or when the P's scheduling tick has not moved for 10 ms, which
// it never does while only callbacks run on it. A P taken means the next
// callback takes an idle one and wakes sysmon from its deep sleep, which
// then polls every 20 µs for a millisecond and more: as much CPU as the
// thread itself in a storm (measured). So the callback yields (runtime.Gosched)
// every yieldEvery, which moves the tick.
type reaper struct {
	c  *C.sv_reaper
	h  cgo.Handle
	in *Init
	// yielded is when svInitdExited last yielded; only the thread's
	// callbacks touch it.
	yielded time.Time
}

// startReaper starts the reaper thread and the goroutine that takes what
// it hands over.
func startReaper(in *Init) (*reaper, error) {
	rp := &reaper{in: in}
	rp.h = cgo.NewHandle(rp)
	var fd, errno C.int
	rp.c = C.sv_reaper_start(C.int(in.cmdPID), C.uintptr_t(rp.h), &fd, &errno)
	if rp.c == nil {
		rp.h.Delete()
		return nil, fmt.Errorf("start the reaper thread: %w", syscall.Errno(errno))
	}
	go rp.takeHandoffs(in, os.NewFile(uintptr(fd), "reaper-eventfd"))
	return rp, nil
}

// takeHandoffs runs what the thread hands over, woken by its eventfd,
// until stop. It waits in the netpoller, not in a cgo call: a goroutine
// blocked in C would keep a processor in its system call, and with none
// left idle the runtime takes back the reaper thread's at every exit it
// reports (the wake-ups this thread is there to avoid).
func (rp *reaper) takeHandoffs(in *Init, notify *os.File) {
	defer notify.Close()
	var buf [8]byte
	for {
		if _, err := notify.Read(buf[:]); err != nil {
			in.log.Error("reaper thread's eventfd", zap.Error(err))
			return
		}
		var arg C.int
		switch C.sv_reaper_take(rp.c, &arg) {
		case C.SV_REAPER_STOPPED:
			return
		case C.SV_REAPER_NONE:
			continue
		case C.SV_REAPER_CHILD:
			in.reapAll() // until no exited child is left
		case C.SV_REAPER_ERROR:
			in.log.Error("waitid", zap.Error(syscall.Errno(arg)))
		}
		C.sv_reaper_ack(rp.c)
	}
}

//export svInitdExited
func svInitdExited(h C.uintptr_t, pid C.int) {
	rp := cgo.Handle(h).Value().(*reaper)
	if f := rp.in.onExit.Load(); f != nil {
		(*f)(int32(pid))
	}
	// Yield now and then (yieldEvery): see reaper.
	if now := time.Now(); now.Sub(rp.yielded) >= yieldEvery {
		rp.yielded = now
		runtime.Gosched()
	}
}

// yieldEvery: sysmon takes a P whose scheduling tick has not moved for
// 10 ms (forcePreemptNS in the runtime's proc.go).
const yieldEvery = 5 * time.Millisecond

// A reaper whose thread did not start (its zero value) does nothing:
// reapLoop runs instead.

func (rp *reaper) report(on bool) {
	if rp.c == nil {
		return
	}
	v := C.int(0)
	if on {
		v = 1
	}
	C.sv_reaper_report(rp.c, v)
}

func (rp *reaper) ownBegin() {
	if rp.c != nil {
		C.sv_reaper_own_begin(rp.c)
	}
}

func (rp *reaper) ownEnd(pid int) {
	if rp.c != nil {
		C.sv_reaper_own_end(rp.c, C.int(pid))
	}
}

func (rp *reaper) disown(pid int) {
	if rp.c != nil {
		C.sv_reaper_disown(rp.c, C.int(pid))
	}
}

func (rp *reaper) reaped() uint64 {
	if rp.c == nil {
		return 0
	}
	return uint64(C.sv_reaper_reaped(rp.c))
}

func (rp *reaper) stop() {
	if rp.c != nil {
		C.sv_reaper_stop(rp.c)
	}
}
