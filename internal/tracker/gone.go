package tracker

import (
	"slices"
	"sync"
	"time"
)

// Waiting for exits. The reaper, once a tree's pidfds say every process
// exited, waits for the table to apply those exits (WaitGone): the kernel
// reports a process's forks before its exit, so after that every child
// forked during the kill is in the table for the next sweep.
//
// A waiter registers a channel on one PID whose entry is still live and is
// woken when removeLocked drops that PID's entry (exit, a newer holder, a
// resync), then looks again. Waking per PID rather than on every removal
// keeps thousands of kills in flight from waking each other thousands of
// times; registering only when someone waits keeps the event path
// allocation-free.

// goneWaiters are the channels of those who wait for a PID's entry to go,
// by PID. Guarded by the table's lock: wakeLocked runs under it, wait
// takes it only to look and to register, never while it waits.
type goneWaiters struct {
	m map[int32][]chan struct{}
}

// wakeLocked is removeLocked's hook: it wakes whoever waits on pid.
func (w *goneWaiters) wakeLocked(pid int32) {
	if ws, ok := w.m[pid]; ok {
		delete(w.m, pid)
		for _, ch := range ws {
			close(ch)
		}
	}
}

// wait waits until live, called with mu (the table's lock) held, finds
// nothing alive, or until deadline; it reports whether nothing is. live
// returns the PID of something still alive, to wait on.
func (w *goneWaiters) wait(mu *sync.Mutex, deadline time.Time, live func() (int32, bool)) bool {
	var timer *time.Timer
	for {
		mu.Lock()
		pid, alive := live()
		if !alive {
			mu.Unlock()
			return true
		}
		ch := make(chan struct{})
		if w.m == nil {
			w.m = map[int32][]chan struct{}{}
		}
		w.m[pid] = append(w.m[pid], ch)
		mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			mu.Lock()
			if ws := slices.DeleteFunc(w.m[pid], func(c chan struct{}) bool { return c == ch }); len(ws) > 0 {
				w.m[pid] = ws
			} else {
				delete(w.m, pid)
			}
			_, alive = live()
			mu.Unlock()
			return !alive
		}
	}
}
