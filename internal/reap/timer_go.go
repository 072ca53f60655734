//go:build linux && !cgo

package reap

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// Timer, in builds without cgo, fires deadlines from a locked Go thread
// reading a CLOCK_BOOTTIME timerfd. It is precise when the process is idle,
// but when read(2) returns the thread needs a Go P, and under load that
// can take milliseconds (see timer_cgo.go for the measurements); the cgo
// build has no such wait.
type Timer struct {
	cfg      TimerConfig
	fd       int
	rt       atomic.Bool
	stopping atomic.Bool
	done     chan struct{}
}

var _ tracker.Alarm = (*Timer)(nil)

// NewTimer creates the timer and connects it to cfg.Queue.
func NewTimer(cfg TimerConfig) (*Timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create(CLOCK_BOOTTIME): %w", err)
	}
	t := &Timer{cfg: cfg, fd: fd, done: make(chan struct{})}
	cfg.Queue.SetAlarm(t)
	return t, nil
}

// Set implements tracker.Alarm: the queue calls it, locked, whenever its
// earliest deadline may have moved, so the last call wins correctly.
func (t *Timer) Set(_ *tracker.Agent, next int64) {
	if t.stopping.Load() {
		return
	}
	t.arm(next)
}

func (t *Timer) arm(at int64) {
	// An absolute time in the past fires at once; 0 disarms.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at)}
	_ = unix.TimerfdSettime(t.fd, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

// Cancel implements tracker.Alarm: agents are popped under the queue's lock,
// so a queued agent has never fired.
func (t *Timer) Cancel(*tracker.Agent) bool { return true }

// RT reports whether the deadline thread runs at SCHED_FIFO.
func (t *Timer) RT() bool { return t.rt.Load() }

// Run fires deadlines until Stop.
func (t *Timer) Run() {
	runtime.LockOSThread() // never unlocked: a real-time thread dies with its goroutine
	defer close(t.done)
	if t.cfg.Realtime {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}
		t.rt.Store(unix.SchedSetAttr(0, &attr, 0) == nil)
	}
	t.arm(t.cfg.Queue.Next())
	var buf [8]byte
	var due []*tracker.Agent
	for {
		_, err := unix.Read(t.fd, buf[:])
		if err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return
		}
		if t.stopping.Load() {
			return
		}
		due = t.cfg.Queue.PopDue(t.cfg.Clock.Now(), due[:0])
		SignalDue(&t.cfg, due)
		if len(due) > 0 {
			t.cfg.Fire(due)
			clear(due)
		}
	}
}

// Stop wakes the thread, waits for Run to return and closes the timer.
func (t *Timer) Stop() {
	t.stopping.Store(true)
	t.arm(1)
	<-t.done
	unix.Close(t.fd)
}
