//go:build linux && cgo

package reap

// #include "alarm.h"
import "C"

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Timer fires deadlines from a pthread outside the Go scheduler (alarm.c):
// it sleeps on a CLOCK_BOOTTIME timerfd at SCHED_FIFO and sends SIGCONT and
// SIGTERM through the agent's pidfd the moment the deadline passes, then
// tells Go through an eventfd; Go hands the agent on for the rest of the
// kill protocol.
//
// Why not a locked Go thread: when its read(2) returns, a Go thread needs a
// P before it can run any code, and under load or while GC mark workers
// hold every P that took up to 10-35 ms (2-core VM, 150 agents: p99 9 ms
// idle, 14 ms under a fork storm). A C thread has no P to wait for.
type Timer struct {
	cfg    TimerConfig
	c      *C.sv_alarm
	notify *os.File
	mu     sync.Mutex
	byID   map[uint64]*tracker.Agent
	done   chan struct{}
}

var _ tracker.Alarm = (*Timer)(nil)

// NewTimer starts the deadline thread and connects it to cfg.Queue.
func NewTimer(cfg TimerConfig) (*Timer, error) {
	var fd, errno C.int
	rt := C.int(0)
	if cfg.Realtime {
		rt = 1
	}
	c := C.sv_new(rt, &fd, &errno)
	if c == nil {
		return nil, fmt.Errorf("start deadline thread: %w", syscall.Errno(errno))
	}
	t := &Timer{cfg: cfg, c: c, notify: os.NewFile(uintptr(fd), "alarm-eventfd"),
		byID: map[uint64]*tracker.Agent{}, done: make(chan struct{})}
	cfg.Queue.SetAlarm(t)
	return t, nil
}

// Set implements tracker.Alarm.
func (t *Timer) Set(a *tracker.Agent, _ int64) {
	if a == nil {
		return // the C side follows its own earliest deadline
	}
	t.mu.Lock()
	_, known := t.byID[a.Seq]
	t.byID[a.Seq] = a
	t.mu.Unlock()
	if known {
		C.sv_move(t.c, C.uint64_t(a.Seq), C.int64_t(a.Deadline))
	} else {
		C.sv_add(t.c, C.uint64_t(a.Seq), C.int64_t(a.Deadline), C.int(t.cfg.signalFD(a)))
	}
}

// Cancel implements tracker.Alarm.
func (t *Timer) Cancel(a *tracker.Agent) bool {
	if C.sv_cancel(t.c, C.uint64_t(a.Seq)) == 0 {
		return false
	}
	t.mu.Lock()
	delete(t.byID, a.Seq)
	t.mu.Unlock()
	return true
}

// RT reports whether the deadline thread runs at SCHED_FIFO.
func (t *Timer) RT() bool { return C.sv_rt(t.c) != 0 }

// Run hands fired agents to cfg.Fire until Stop.
func (t *Timer) Run() {
	defer close(t.done)
	var b [8]byte
	for {
		if _, err := t.notify.Read(b[:]); err != nil {
			return // closed by Stop
		}
		t.drain()
	}
}

// drain hands every fired agent on. An agent leaves byID only once taken
// from the queue, so a Reschedule meanwhile finds it known and only moves
// (never re-adds) its C entry, which has fired and is gone.
func (t *Timer) drain() {
	var buf [256]C.sv_fired
	var due []*tracker.Agent
	for {
		n := int(C.sv_drain(t.c, &buf[0], C.int(len(buf))))
		due = due[:0]
		for _, f := range buf[:n] {
			t.mu.Lock()
			a := t.byID[uint64(f.id)]
			t.mu.Unlock()
			if a == nil || !t.cfg.Queue.Take(a) {
				continue
			}
			t.mu.Lock()
			delete(t.byID, uint64(f.id))
			t.mu.Unlock()
			a.Fired = int64(f.fired)
			switch f.err {
			case 0:
			case C.int(syscall.ESRCH):
				a.FireErr = tracker.ErrGone
			default:
				a.FireErr = syscall.Errno(f.err)
			}
			due = append(due, a)
		}
		if len(due) > 0 {
			t.cfg.Fire(due)
		}
		if n < len(buf) {
			return
		}
	}
}

// Stop ends the deadline thread and Run. Agents that fired but were not yet
// handed on are handed on now, so their trees are still reaped.
func (t *Timer) Stop() {
	C.sv_stop(t.c)
	t.notify.Close() // wakes Run
	<-t.done
	t.drain()
	// The event loop may still run (in-flight kills need it): the queue
	// must not call Set or Cancel on freed memory.
	t.cfg.Queue.SetAlarm(nil)
	C.sv_free(t.c)
}
