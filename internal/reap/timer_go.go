//go:build linux

package reap

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// goTimer is the Timer of builds without cgo (timer_nocgo.go): it fires
// deadlines from a locked Go thread reading a CLOCK_BOOTTIME timerfd. It is
// precise when the process is idle, but when read(2) returns the thread
// needs a Go P, and under load that can take milliseconds (see timer_cgo.go
// for the measurements); the cgo build has no such wait. It builds with cgo
// too, so that its tests run under the race detector, which needs cgo.
type goTimer struct {
	cfg  TimerConfig
	rt   atomic.Bool
	done chan struct{}

	// mu orders arming against Stop. Without it a Set that had seen "not
	// stopping" could re-arm the timerfd for a far deadline (or disarm it)
	// right after Stop armed it to wake Run: Run slept on and Stop waited
	// forever. It also keeps a late Set off a closed (or reused) fd.
	mu       sync.Mutex
	fd       int
	stopping bool
	started  bool
}

var _ tracker.Alarm = (*goTimer)(nil)

// newGoTimer creates the timer and connects it to cfg.Queue.
func newGoTimer(cfg TimerConfig) (*goTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create(CLOCK_BOOTTIME): %w", err)
	}
	t := &goTimer{cfg: cfg, fd: fd, done: make(chan struct{})}
	cfg.Queue.SetAlarm(t)
	return t, nil
}

// Set implements tracker.Alarm: the queue calls it, locked, whenever its
// earliest deadline may have moved, so the last call wins correctly.
func (t *goTimer) Set(_ *tracker.Agent, next int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopping {
		t.armLocked(next)
	}
}

func (t *goTimer) armLocked(at int64) {
	// An absolute time in the past fires at once; 0 disarms.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at)}
	_ = unix.TimerfdSettime(t.fd, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

// Cancel implements tracker.Alarm: agents are popped under the queue's lock,
// so a queued agent has never fired.
func (t *goTimer) Cancel(*tracker.Agent) bool { return true }

// RT reports whether the deadline thread runs at SCHED_FIFO.
func (t *goTimer) RT() bool { return t.rt.Load() }

// Run fires deadlines until Stop.
func (t *goTimer) Run() {
	runtime.LockOSThread() // never unlocked: a real-time thread dies with its goroutine
	defer close(t.done)
	t.mu.Lock()
	if t.stopping {
		t.mu.Unlock()
		return
	}
	t.started = true
	// Wake at once: the first PopDue arms the earliest deadline through
	// Set, under the queue's lock. Arming Queue.Next() here instead could
	// overwrite the deadline of an agent queued in between.
	t.armLocked(1)
	t.mu.Unlock()
	if t.cfg.Realtime {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}
		t.rt.Store(unix.SchedSetAttr(0, &attr, 0) == nil)
	}
	var buf [8]byte
	var due []*tracker.Agent
	for {
		_, err := unix.Read(t.fd, buf[:])
		if err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return
		}
		t.mu.Lock()
		stopping := t.stopping
		t.mu.Unlock()
		if stopping {
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

// Stop wakes the thread, waits for Run to return (if it ever started) and
// closes the timer. A Set from now on does nothing.
func (t *goTimer) Stop() {
	t.mu.Lock()
	t.stopping = true
	t.armLocked(1)
	started := t.started
	t.mu.Unlock()
	if started {
		<-t.done
	}
	t.mu.Lock()
	unix.Close(t.fd)
	t.fd = -1
	t.mu.Unlock()
}
