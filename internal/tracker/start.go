package tracker

import "time"

// Tick is the resolution of /proc/PID/stat starttime: USER_HZ is 100 on
// every Linux ABI (include/asm-generic/param.h), whatever CONFIG_HZ is.
const Tick = int64(10 * time.Millisecond)

// forkSlack bounds how long after a task's start_boottime the kernel stamps
// its fork event. copy_process (kernel/fork.c) records start_boottime, then
// takes tasklist_lock and makes the task visible; proc_fork_connector stamps
// the event after that. Measured on a 2-core VM (PREEMPT_NONE, Linux 6.18):
// the event never came more than 0.06 ms after the end of the /proc tick
// (25,000 forks under shell fork storms). With preemption enabled a fork can
// be preempted between the two for scheduler slices; 50 ms covers many of
// them. The bound only decides whether two start times describe one process:
// too small, and a real agent seen by a scan and then by its late fork event
// (or by its fork event and then /proc at exec) would look like a reused PID
// and be dropped and re-added. Reuse within it is impossible: a PID comes back
// only after the allocator has cycled through every free PID (alloc_pid is
// cyclic), at least 2,768 forks even with 30,000 of pid_max 32,768 live:
// 55,000 forks/s for 50 ms, while the fastest storm measured here is ~20,000/s
// (a full wrap in ~1.6 s).
const forkSlack = int64(50 * time.Millisecond)

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

// Wall converts boottime instants to wall-clock time from one reading of
// both clocks, so every time in one answer (and the same instant in two
// answers) comes out the same: Time reads the wall clock at each call, and
// a goroutine preempted between the two clocks moves its answer by as long
// as it waited.
type Wall struct {
	now  int64     // the boottime reading
	wall time.Time // the wall clock at that reading
}

// ReadWall reads boottime from now between two readings of the wall
// clock, up to five times, and keeps the reading with the narrowest gap
// (a preempted reading is wide).
func ReadWall(now func() int64) Wall {
	var w Wall
	best := time.Duration(-1)
	for range 5 {
		w1 := time.Now()
		b := now()
		gap := time.Since(w1)
		if best < 0 || gap < best {
			best, w = gap, Wall{now: b, wall: w1.Add(gap / 2)}
		}
		if best < 20*time.Microsecond {
			break
		}
	}
	return w
}

// Now is the boottime reading w was taken at.
func (w Wall) Now() int64 { return w.now }

// Time is the wall-clock time of the boottime instant boot.
func (w Wall) Time(boot int64) time.Time { return w.wall.Add(time.Duration(boot - w.now)) }
