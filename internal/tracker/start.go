package tracker

import "time"

// Tick is the resolution of /proc/PID/stat starttime: USER_HZ is 100 on
// every Linux ABI (include/asm-generic/param.h), whatever CONFIG_HZ is.
const Tick = int64(10 * time.Millisecond)

// forkSlack bounds how long after a task's start_boottime the kernel stamps
// its fork event (proc_fork_connector runs at the end of copy_process). It is
// only used to decide whether two start times describe one process; PID reuse
// within it would need thousands of forks in 10 ms.
const forkSlack = Tick

// Start is when a process started, in CLOCK_BOOTTIME nanoseconds.
//
// From a fork event it is exact (Exact): the event's CLOCK_MONOTONIC
// timestamp converted to boottime, a few microseconds after the kernel's own
// start_boottime. From /proc it is a whole clock tick: the true start lies in
// [NS, NS+Tick).
type Start struct {
	NS    int64
	Exact bool
}

// FromTicks converts /proc/PID/stat starttime (clock ticks since boot).
func FromTicks(ticks uint64) Start { return Start{NS: int64(ticks) * Tick} }

// interval is the range the true start time may lie in.
func (s Start) interval() (lo, hi int64) {
	if s.Exact {
		return s.NS - forkSlack, s.NS + 1
	}
	return s.NS, s.NS + Tick
}

// Latest is the latest instant the process can have started. Deadlines are
// computed from it so that they are never early.
func (s Start) Latest() int64 {
	if s.Exact {
		return s.NS
	}
	return s.NS + Tick
}

// Same reports whether two start times can describe the same process.
func (s Start) Same(o Start) bool {
	if s.Exact == o.Exact {
		return s.NS == o.NS
	}
	alo, ahi := s.interval()
	blo, bhi := o.interval()
	return alo < bhi && blo < ahi
}

// Before reports whether s is certainly earlier than the instant t.
func (s Start) Before(t int64) bool {
	_, hi := s.interval()
	return hi <= t
}

// After reports whether s is certainly later than the instant t.
func (s Start) After(t int64) bool {
	lo, _ := s.interval()
	return lo > t
}

// StartedAfter reports whether s certainly started after o: a process
// cannot be the parent of one that started before it.
func (s Start) StartedAfter(o Start) bool {
	lo, _ := s.interval()
	_, hi := o.interval()
	return lo >= hi
}

// Time converts a boottime instant to wall-clock time, given the current
// boottime reading now.
func Time(boot, now int64) time.Time {
	return time.Now().Add(time.Duration(boot - now))
}
