//go:build linux

package tracker

import "golang.org/x/sys/unix"

// SystemClock reads the kernel's clocks.
type SystemClock struct{}

func read(id int32) int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(id, &ts) // vDSO; cannot fail for these clocks
	return ts.Nano()
}

// Now is CLOCK_BOOTTIME: the clock /proc start times count from, and which,
// unlike CLOCK_MONOTONIC, keeps counting through suspend.
func (SystemClock) Now() int64 { return read(unix.CLOCK_BOOTTIME) }

// BootOffset is CLOCK_BOOTTIME minus CLOCK_MONOTONIC: the time spent in
// suspend. Proc event timestamps are ktime_get_ns() (monotonic).
func (SystemClock) BootOffset() int64 {
	m := read(unix.CLOCK_MONOTONIC)
	b := read(unix.CLOCK_BOOTTIME)
	return b - m
}
