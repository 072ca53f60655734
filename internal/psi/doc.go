// Package psi reads the kernel's pressure stall information and waits for
// its triggers (Documentation/accounting/psi.rst, kernel/sched/psi.c).
//
// The pressure files (/proc/pressure/{cpu,memory,io} and a cgroup v2
// group's cpu.pressure, memory.pressure, io.pressure) hold two lines:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// "some" is the share of time at least one task was stalled on the
// resource, "full" the share in which every non-idle task was; the averages
// are percentages over 10, 60 and 300 seconds, total the stall time in
// microseconds. Parse decodes them in a pure function, tested with byte
// literals and fuzzed.
//
// A trigger is a line "<some|full> <stall µs> <window µs>" written to an
// open pressure file: the kernel then raises POLLPRI on that descriptor
// when the stall within any window reaches the stall amount, at most once
// per window, and tears the trigger down when the descriptor is closed.
// ParseSpec reads the operator's form ("some 150ms 1s") with the kernel's
// bounds; Trigger (trigger_linux.go) registers it and blocks in poll(2)
// until the kernel wakes it: there is no polling loop.
//
// Locate chooses the file: the memory.pressure of the cgroup v2 group that
// limits the daemon's memory only when the sessions live under that limit
// too (supervisor init, its command inside the group), else
// /proc/pressure/memory, which is system-wide in every namespace. At takes
// the operator's file (--pressure-file) instead.
//
// Policy (policy.go) is what the daemon does with a trigger: kill the one
// session most to blame, then wait out a cooldown. It is pure logic over
// small interfaces its caller implements.
package psi
