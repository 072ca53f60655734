package tracker

import (
	"slices"
	"time"
)

// Waiting for exits. The reaper, once a tree's pidfds say every process
// exited, waits for the table to apply those exits: the kernel reports a
// process's forks before its exit, so after that every child forked during
// the kill is in the table for the next sweep.
//
// A waiter registers a channel on one PID whose entry is still live and is
// woken when removeLocked drops that PID's entry (exit, a newer holder, a
// resync), then looks again. Waking per PID rather than on every removal
// keeps thousands of kills in flight from waking each other thousands of
// times; registering only when someone waits keeps the event path
// allocation-free.

// wakeGoneLocked is removeLocked's hook: it wakes whoever waits on pid.
func (t *Table) wakeGoneLocked(pid int32) {
	if ws, ok := t.goneWaiters[pid]; ok {
		delete(t.goneWaiters, pid)
		for _, ch := range ws {
			close(ch)
		}
	}
}

// liveLocked returns the PID of p or of a target the table still holds
// alive, or false when Gone would report true.
func (t *Table) liveLocked(p *Proc, targets []Target) (int32, bool) {
	if !p.dead {
		return p.PID, true
	}
	for _, tg := range targets {
		if q := t.procs[tg.PID]; q != nil && q.Start.Same(tg.Start) {
			return tg.PID, true
		}
	}
	return 0, false
}

// WaitGone waits until the table has applied the exit of p and of every
// target (see Gone), or until deadline; it reports whether they are gone.
// It takes the table's lock only to look and to register, never while it
// waits.
func (t *Table) WaitGone(deadline time.Time, p *Proc, targets []Target) bool {
	var timer *time.Timer
	for {
		t.mu.Lock()
		pid, live := t.liveLocked(p, targets)
		if !live {
			t.mu.Unlock()
			return true
		}
		ch := make(chan struct{})
		if t.goneWaiters == nil {
			t.goneWaiters = map[int32][]chan struct{}{}
		}
		t.goneWaiters[pid] = append(t.goneWaiters[pid], ch)
		t.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			t.mu.Lock()
			if ws := slices.DeleteFunc(t.goneWaiters[pid], func(c chan struct{}) bool { return c == ch }); len(ws) > 0 {
				t.goneWaiters[pid] = ws
			} else {
				delete(t.goneWaiters, pid)
			}
			_, live = t.liveLocked(p, targets)
			t.mu.Unlock()
			return !live
		}
	}
}
