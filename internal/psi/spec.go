package psi

import (
	"fmt"
	"strings"
	"time"
)

// The kernel's bounds for a trigger window (kernel/sched/psi.c,
// psi_trigger_create; psi.rst "Monitoring for pressure thresholds"): the
// window is sampled ten times over, so 500 ms means a check every 50 ms.
const (
	MinWindow = 500 * time.Millisecond
	MaxWindow = 10 * time.Second
)

// Spec is a trigger: wake when tasks stalled for Stall within any Window.
// Full asks for the full line (every non-idle task stalled) instead of some.
type Spec struct {
	Full   bool
	Stall  time.Duration
	Window time.Duration
}

// ParseSpec reads "some|full STALL WINDOW" with Go durations, e.g.
// "some 150ms 1s". Both durations must be whole microseconds (the kernel's
// unit), the window within [500ms, 10s], the stall positive and no longer
// than the window; an error names the part that is wrong.
func ParseSpec(s string) (Spec, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return Spec{}, fmt.Errorf("pressure trigger %q: want \"some|full STALL WINDOW\", e.g. \"some 150ms 1s\"", clip([]byte(s)))
	}
	var sp Spec
	switch f[0] {
	case "some":
	case "full":
		sp.Full = true
	default:
		return Spec{}, fmt.Errorf("pressure trigger %q: kind %q: want some or full", clip([]byte(s)), clip([]byte(f[0])))
	}
	var err error
	if sp.Stall, err = micros("stall", f[1]); err != nil {
		return Spec{}, fmt.Errorf("pressure trigger %q: %w", clip([]byte(s)), err)
	}
	if sp.Window, err = micros("window", f[2]); err != nil {
		return Spec{}, fmt.Errorf("pressure trigger %q: %w", clip([]byte(s)), err)
	}
	if err := sp.Check(); err != nil {
		return Spec{}, fmt.Errorf("pressure trigger %q: %w", clip([]byte(s)), err)
	}
	return sp, nil
}

func micros(what, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a duration (want e.g. 150ms)", what, clip([]byte(v)))
	}
	if d%time.Microsecond != 0 {
		return 0, fmt.Errorf("%s %s: not a whole number of microseconds", what, d)
	}
	return d, nil
}

// Check applies the kernel's bounds (psi_trigger_create returns EINVAL
// outside them).
func (s Spec) Check() error {
	if s.Window < MinWindow || s.Window > MaxWindow {
		return fmt.Errorf("window %s: must be from %s to %s", s.Window, MinWindow, MaxWindow)
	}
	if s.Stall <= 0 || s.Stall > s.Window {
		return fmt.Errorf("stall %s: must be positive and at most the window (%s)", s.Stall, s.Window)
	}
	return nil
}

// Kind is "some" or "full".
func (s Spec) Kind() string {
	if s.Full {
		return "full"
	}
	return "some"
}

// String is the operator's form, "some 150ms 1s".
func (s Spec) String() string {
	return fmt.Sprintf("%s %s %s", s.Kind(), s.Stall, s.Window)
}

// Kernel is the line written to the pressure file, in microseconds:
// "some 150000 1000000".
func (s Spec) Kernel() string {
	return fmt.Sprintf("%s %d %d", s.Kind(), s.Stall.Microseconds(), s.Window.Microseconds())
}

// Unprivileged reports whether a process without CAP_SYS_RESOURCE may
// register this trigger: since Linux 6.4 such triggers are served by the
// 2-second averaging work rather than the real-time poller, so their
// window must be a multiple of 2 s (psi.rst, psi_trigger_create).
func (s Spec) Unprivileged() bool { return s.Window%(2*time.Second) == 0 }
