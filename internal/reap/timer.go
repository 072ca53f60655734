package reap

import (
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// TimerConfig configures a Timer.
type TimerConfig struct {
	Queue *tracker.Deadlines
	Clock tracker.Clock
	Guard *Guard
	// DryRun: deadlines fire, no signal is sent.
	DryRun bool
	// Realtime asks for SCHED_FIFO priority 1 on the deadline thread.
	Realtime bool
	// Fire receives the agents that are due, with Fired and FireErr set,
	// and owns them.
	Fire func(due []*tracker.Agent)
}

// signalFD reports the pidfd the timer may signal for a, or -1 when no
// signal may be sent: dry run, no pidfd, or a protected process.
func (c *TimerConfig) signalFD(a *tracker.Agent) int {
	if c.DryRun || a.FD < 0 || !c.Guard.Allowed(a.PID, false) {
		return -1
	}
	return a.FD
}

// SignalDue sends the first signals (SIGCONT, SIGTERM) to agents that are
// due, from the calling goroutine, and records when. The cgo Timer does this
// in C; the pure-Go Timer and `supervisor once` call this.
func SignalDue(c *TimerConfig, due []*tracker.Agent) {
	for _, a := range due {
		if fd := c.signalFD(a); fd >= 0 {
			_ = signal(fd, unix.SIGCONT)
			a.FireErr = signal(fd, unix.SIGTERM)
		}
		a.Fired = c.Clock.Now()
	}
}
