package resource

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Limits are the resource limits of a session; zero is off.
type Limits struct {
	MaxMemory int64         // bytes
	MaxProcs  int           // live members
	Idle      time.Duration // no member used CPU for this long
}

// Any reports whether a limit is set.
func (l Limits) Any() bool { return l.MaxMemory > 0 || l.MaxProcs > 0 || l.Idle > 0 }

// Crossing is a limit a session crossed at a sample.
type Crossing struct {
	Reason  tracker.Reason
	Figures tracker.Figures
}

// Check returns the limits s crosses, memory first, then procs, then idle
// (the first is the kill's reason; all of them are reported in a dry run).
// Exempt sessions cross nothing.
func (l Limits) Check(s *Session) []Crossing {
	if s.Exempt {
		return nil
	}
	var out []Crossing
	fig := func(limit float64) tracker.Figures {
		return tracker.Figures{MemoryBytes: s.MemoryBytes, Procs: s.Procs, Details: map[string]float64{
			"limit": limit, "cpu_seconds": s.CPUSeconds, "idle_seconds": s.IdleSeconds}}
	}
	if l.MaxMemory > 0 && s.MemoryBytes > l.MaxMemory {
		out = append(out, Crossing{tracker.ReasonMemory, fig(float64(l.MaxMemory))})
	}
	if l.MaxProcs > 0 && s.Procs > l.MaxProcs {
		out = append(out, Crossing{tracker.ReasonProcs, fig(float64(l.MaxProcs))})
	}
	if l.Idle > 0 && s.IdleSeconds >= l.Idle.Seconds() {
		out = append(out, Crossing{tracker.ReasonIdle, fig(l.Idle.Seconds())})
	}
	return out
}
