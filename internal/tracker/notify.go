package tracker

import "github.com/agent-supervisor/supervisor/internal/cgroupinfo"

// NoticeKind says what a Notice reports.
type NoticeKind uint8

// The notices the table gives.
const (
	// NoticeAgent: a process matched an agent rule and was queued with its
	// deadline (found by an event, a scan, or a reload's new rules).
	NoticeAgent NoticeKind = iota + 1
	// NoticeDeadline: a queued deadline moved (a reload changed max age,
	// an operator extended it).
	NoticeDeadline
	// NoticeLeftover: a session member outlived its agent and was queued
	// to be killed at Deadline (the agent's exit + the leftover grace).
	NoticeLeftover
)

// Notice tells the daemon that something happened to the queue, so it can
// tell its operators (the event stream). Times are CLOCK_BOOTTIME ns.
type Notice struct {
	Kind    NoticeKind
	PID     int32
	Start   Start
	Comm    string
	Cmdline string
	Rule    string
	Reason  Reason
	Session SessionID
	// Deadline is the agent's deadline, or the leftover's kill time.
	Deadline int64
	// Previous and Cause (NoticeDeadline): the deadline before, and what
	// moved it ("reload", "extend", ...).
	Previous int64
	Cause    string
	// Cgroup is where the process runs, as read when it was queued.
	Cgroup cgroupinfo.Info
}

// notifier hands notices to Config.OnNotice (nil: nobody listens). It may
// run with the table's lock held (OnNotice's contract: it does not block
// and does not call back into the table or its queue).
type notifier func(Notice)

// send hands n on.
func (f notifier) send(n Notice) {
	if f != nil {
		f(n)
	}
}

func agentNotice(kind NoticeKind, a *Agent, deadline int64) Notice {
	return Notice{Kind: kind, PID: a.PID, Start: a.Start, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule,
		Reason: a.Reason, Session: a.Session, Deadline: deadline, Cgroup: a.Cgroup}
}

// deadlineMovedLocked reports that a's deadline moved from previous to
// deadline because of cause ("reload", "extend"). Call it where a's Reason
// cannot change under it: with the table's lock or the queue's held (or
// from a Reschedule function).
func (f notifier) deadlineMovedLocked(a *Agent, previous, deadline int64, cause string) {
	if f == nil || previous == deadline {
		return
	}
	n := agentNotice(NoticeDeadline, a, deadline)
	n.Previous, n.Cause = previous, cause
	f(n)
}
