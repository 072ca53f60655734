package daemon

import (
	"errors"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// catchUpWait is how long a control command waits for the table to learn
// of a process /proc already shows: the process's fork and exec are in the
// proc connector's stream but not applied yet, which on a loaded machine
// can take a while after the process started and printed its PID. Longer
// than that and the table is not behind: the process is not one it tracks.
const catchUpWait = 3 * time.Second

// lagging is the process table as the control commands see it: a command
// on a PID the table does not hold yet, while /proc shows a live process
// there (with the start the command names, if it names one), is tried again
// until the table has caught up or catchUpWait has passed. Without it, a
// command sent right after a process started could be answered "no such
// process" about a process that is plainly there.
type lagging struct {
	controlTable
	// stat reads a live process's start time from /proc.
	stat func(pid int32) (tracker.ProcInfo, error)
}

// retry runs op until it answers something other than ErrNoProcess for a
// process /proc shows alive (and, when start is not zero, started then),
// or until catchUpWait has passed.
func retry(l lagging, pid int32, start tracker.Start, op func() (tracker.LeaseResult, error)) (tracker.LeaseResult, error) {
	deadline := time.Now().Add(catchUpWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		res, err := op()
		if !errors.Is(err, tracker.ErrNoProcess) || l.stat == nil || time.Now().After(deadline) {
			return res, err
		}
		info, serr := l.stat(pid)
		if serr != nil || (start != (tracker.Start{}) && !info.Start.Same(start)) {
			return res, err
		}
		time.Sleep(delay)
	}
}

func (l lagging) Extend(pid int32, start tracker.Start, d time.Duration) (tracker.LeaseResult, error) {
	return retry(l, pid, start, func() (tracker.LeaseResult, error) { return l.controlTable.Extend(pid, start, d) })
}

func (l lagging) ExtendUntil(pid int32, start tracker.Start, until int64) (tracker.LeaseResult, error) {
	return retry(l, pid, start, func() (tracker.LeaseResult, error) { return l.controlTable.ExtendUntil(pid, start, until) })
}

func (l lagging) Keep(pid int32, start tracker.Start) (tracker.LeaseResult, error) {
	return retry(l, pid, start, func() (tracker.LeaseResult, error) { return l.controlTable.Keep(pid, start) })
}

func (l lagging) Unkeep(pid int32, start tracker.Start) (tracker.LeaseResult, error) {
	return retry(l, pid, start, func() (tracker.LeaseResult, error) { return l.controlTable.Unkeep(pid, start) })
}

func (l lagging) KillNow(pid int32, start tracker.Start, force bool, by string, allow func(pid int32, kthread bool) bool) (tracker.LeaseResult, error) {
	return retry(l, pid, start, func() (tracker.LeaseResult, error) {
		return l.controlTable.KillNow(pid, start, force, by, allow)
	})
}
