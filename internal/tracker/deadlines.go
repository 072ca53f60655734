package tracker

import (
	"container/heap"
	"sync"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

// Agent is a tracked process that matched a rule and has a deadline.
//
// Its identity fields are fixed once it is queued, so the timer and the
// reaper read them without locks. FD is a pidfd pinned to this very process
// (opened and checked against Start when the agent was found): signals sent
// through it cannot reach a process that reused the PID. Whoever holds the
// Agent owns FD: the queue until the agent is due, then whoever the alarm
// handed it to.
type Agent struct {
	PID      int32
	Start    Start
	Comm     string
	Cmdline  string
	Rule     string
	Deadline int64  // CLOCK_BOOTTIME ns; changed only under the queue lock
	FD       int    // pidfd, or -1
	Seq      uint64 // unique per queue, for alarms that need a key
	// Reason is why it is queued: max_age for an agent, leftover for a
	// session member that outlived its agent. Changed only under the queue
	// lock, before the deadline fires.
	Reason Reason
	// Session is the session the process belongs to (the zero ID if none).
	Session SessionID
	// RequestedBy names who asked for a manual kill (ReasonManual), e.g.
	// "uid 0 pid 1234". Changed only under the queue lock.
	RequestedBy string
	// Cgroup is where the process runs (cgroup.go): read when it was
	// queued, again on a resync. Changed only under the queue lock
	// (Deadlines.SetCgroup), and only while queued.
	Cgroup cgroupinfo.Info
	// Figures are the session's resource figures when a policy decided to
	// kill it (resources.go); zero for max age and leftovers. Changed only
	// under the queue lock, before the deadline fires.
	Figures Figures

	// Attempt counts the failed kills before this one (retry.go): 0 for a
	// first kill, n for the n-th retry of a process still alive after its
	// kill failed. FirstDeadline is then the first kill's deadline, which
	// the kill record keeps (Deadline is when this attempt is due). Changed
	// only under the queue lock, while queued.
	Attempt       int
	FirstDeadline int64

	// Set by the alarm when the agent is due, before it is handed on.
	Fired   int64 // CLOCK_BOOTTIME ns of the first signal (or of the deadline firing, if none was sent)
	FireErr error // error of that signal; ErrGone if the process had exited

	proc  *Proc
	index int // in the heap; -1 once taken or removed
	// extra and until are the process's lease (leases.go), under the
	// queue lock: agentDeadline reads them.
	extra, until int64
}

// Proc returns the table entry of the agent, which stays linked to its
// descendants until Table.Release.
func (a *Agent) Proc() *Proc { return a.proc }

// Alarm is what the queue needs of a timer. Both methods are called with
// the queue locked, so they see the queue's changes in order.
type Alarm interface {
	// Set says that a was queued or its deadline changed (a is nil when
	// only the earliest deadline, next, changed; 0 means none is queued).
	Set(a *Agent, next int64)
	// Cancel takes a off the alarm. It returns false if a has fired
	// already: a then stays queued until the alarm takes it.
	Cancel(a *Agent) bool
}

// Deadlines is a min-heap of agents by deadline, safe for concurrent use,
// that keeps its Alarm informed.
type Deadlines struct {
	mu        sync.Mutex
	h         agentHeap
	seq       uint64
	alarm     Alarm
	left      int // queued with ReasonLeftover
	retry     int // queued with Attempt > 0
	leftRetry int // both: a leftover's kill retried
}

// SetAlarm connects the alarm. Call it before the first Add.
func (d *Deadlines) SetAlarm(a Alarm) {
	d.mu.Lock()
	d.alarm = a
	d.mu.Unlock()
}

func (d *Deadlines) nextLocked() int64 {
	if len(d.h) == 0 {
		return 0
	}
	return d.h[0].Deadline
}

// Add queues a.
func (d *Deadlines) Add(a *Agent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addLocked(a)
}

// AddWith queues a with the deadline fn computes, under the queue's lock, and
// returns it. Computed there, the deadline cannot be older than a Reschedule
// that ran meanwhile: Reschedule and AddWith are ordered by the lock, and
// whichever comes second sees the other's work.
func (d *Deadlines) AddWith(a *Agent, fn func(*Agent) int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	a.Deadline = fn(a)
	d.addLocked(a)
	return a.Deadline
}

func (d *Deadlines) addLocked(a *Agent) {
	d.seq++
	a.Seq = d.seq
	heap.Push(&d.h, a)
	d.count(a, 1)
	if d.alarm != nil {
		d.alarm.Set(a, d.nextLocked())
	}
}

func (d *Deadlines) queuedLocked(a *Agent) bool {
	return a.index >= 0 && a.index < len(d.h) && d.h[a.index] == a
}

// Remove takes a out of the queue before its deadline. It reports false if
// a was not queued or has fired already: the caller then does not own it.
func (d *Deadlines) Remove(a *Agent) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return false
	}
	if d.alarm != nil && !d.alarm.Cancel(a) {
		return false
	}
	heap.Remove(&d.h, a.index)
	d.count(a, -1)
	return true
}

// Take removes a fired agent; the alarm calls it before handing a on. It
// reports false if a was not queued.
func (d *Deadlines) Take(a *Agent) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return false
	}
	heap.Remove(&d.h, a.index)
	d.count(a, -1)
	return true
}

// count keeps the number of queued leftovers and retries.
func (d *Deadlines) count(a *Agent, n int) {
	if a.Reason == ReasonLeftover {
		d.left += n
	}
	if a.Attempt > 0 {
		d.retry += n
		if a.Reason == ReasonLeftover {
			d.leftRetry += n
		}
	}
}

// counts returns, at one instant, the number of queued agents (neither
// leftovers nor retries), leftovers (retried ones included) and retries.
func (d *Deadlines) counts() (agents, leftovers, retrying int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.h) - d.left - (d.retry - d.leftRetry), d.left, d.retry
}

// Retrying is the number of queued retries of failed kills (retry.go).
func (d *Deadlines) Retrying() int {
	_, _, retrying := d.counts()
	return retrying
}

// Leftovers is the number of queued leftovers (the rest are agents).
func (d *Deadlines) Leftovers() int {
	_, leftovers, _ := d.counts()
	return leftovers
}

// RetargetEarlier gives a queued a the deadline and reason (and session)
// if that deadline comes before its own; all read and written under the
// queue lock, which Reschedule also holds. A retry of a failed kill keeps
// its reason and schedule (only an operator's kill moves it).
func (d *Deadlines) RetargetEarlier(a *Agent, deadline int64, reason Reason, s SessionID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) || a.Deadline <= deadline || a.Attempt > 0 {
		return false
	}
	d.updateLocked(a, func() { a.Deadline, a.Reason, a.Session = deadline, reason, s })
	return true
}

// updateLocked changes the queued a with fn (its deadline, and maybe its
// reason or attempt, which the counts follow), then restores the heap and
// tells the alarm.
func (d *Deadlines) updateLocked(a *Agent, fn func()) {
	d.count(a, -1)
	fn()
	d.count(a, 1)
	heap.Fix(&d.h, a.index)
	if d.alarm != nil {
		d.alarm.Set(a, d.nextLocked())
	}
}

// DeadlineOf returns a's deadline and whether it is still queued.
func (d *Deadlines) DeadlineOf(a *Agent) (int64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return a.Deadline, d.queuedLocked(a)
}

// Queued reports whether a is still waiting for its deadline.
func (d *Deadlines) Queued(a *Agent) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queuedLocked(a)
}

// PopDue removes and returns, appended to buf, every agent whose deadline is
// at or before now, earliest first, and tells the alarm the next deadline.
func (d *Deadlines) PopDue(now int64, buf []*Agent) []*Agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.h) > 0 && d.h[0].Deadline <= now {
		a := heap.Pop(&d.h).(*Agent)
		d.count(a, -1)
		buf = append(buf, a)
	}
	if d.alarm != nil {
		d.alarm.Set(nil, d.nextLocked())
	}
	return buf
}

// Next is the earliest deadline, or 0 if none is queued.
func (d *Deadlines) Next() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nextLocked()
}

// Len is the number of queued agents.
func (d *Deadlines) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.h)
}

// Snapshot copies the queued agents, in no particular order.
func (d *Deadlines) Snapshot() []Agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Agent, len(d.h))
	for i, a := range d.h {
		out[i] = *a
	}
	return out
}

// Reschedule recomputes every queued deadline with fn (used when the maximum
// age changes) and tells the alarm.
func (d *Deadlines) Reschedule(fn func(a *Agent) int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.h {
		a.Deadline = fn(a)
	}
	heap.Init(&d.h)
	if d.alarm != nil {
		for _, a := range d.h {
			d.alarm.Set(a, d.nextLocked())
		}
	}
}

// SetCgroup changes a's attribution if a is still queued (once taken, the
// reaper reads it without locks). It reports whether a was queued.
func (d *Deadlines) SetCgroup(a *Agent, info cgroupinfo.Info) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return false
	}
	a.Cgroup = info
	return true
}

// setLease gives the queued agent a its lease and moves its deadline to
// what fn says, returning the deadline before and after. It reports false
// if a is no longer queued (it fired).
func (d *Deadlines) setLease(a *Agent, extra, until int64, fn func(*Agent) int64) (int64, int64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return 0, 0, false
	}
	previous := a.Deadline
	d.updateLocked(a, func() {
		a.extra, a.until = extra, until
		a.Deadline = fn(a)
	})
	return previous, a.Deadline, true
}

// retargetNow makes the queued a due at deadline for k. It reports false if
// a is no longer queued. A retry of a failed kill (retry.go) becomes a
// first kill of its own: a new order, with its own reason and deadline.
func (d *Deadlines) retargetNow(a *Agent, deadline int64, k kill) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return false
	}
	d.updateLocked(a, func() {
		a.Deadline, a.Reason, a.RequestedBy, a.Figures = deadline, k.why, k.by, k.fig
		a.Attempt, a.FirstDeadline = 0, 0
	})
	return true
}

// toRetry makes the queued a the n-th retry of the kill from (first: its
// first deadline), due at at or at its own deadline if that comes first.
// It reports false if a is not queued (fired: in another kill's hands).
func (d *Deadlines) toRetry(a, from *Agent, n int, first, at int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.queuedLocked(a) {
		return false
	}
	d.updateLocked(a, func() {
		a.Deadline, a.Reason, a.Session, a.RequestedBy, a.Figures = min(a.Deadline, at), from.Reason, from.Session, from.RequestedBy, from.Figures
		a.Attempt, a.FirstDeadline = n, first
	})
	return true
}

type agentHeap []*Agent

func (h agentHeap) Len() int { return len(h) }
func (h agentHeap) Less(i, j int) bool {
	if h[i].Deadline != h[j].Deadline {
		return h[i].Deadline < h[j].Deadline
	}
	return h[i].Seq < h[j].Seq
}
func (h agentHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *agentHeap) Push(x any) {
	a := x.(*Agent)
	a.index = len(*h)
	*h = append(*h, a)
}
func (h *agentHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	a.index = -1
	return a
}
