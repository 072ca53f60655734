package tracker

import (
	"container/heap"
	"sync"
)

// Agent is a tracked process that matched a rule and has a deadline.
//
// Its fields are fixed once it is queued, so the timer thread and the reaper
// read them without locks. FD is a pidfd pinned to this very process (opened
// and checked against Start when the agent was found): signals sent through
// it cannot reach a process that reused the PID. Whoever holds the Agent owns
// FD: the queue until the agent is due, then whoever Fire handed it to.
type Agent struct {
	PID      int32
	Start    Start
	Comm     string
	Cmdline  string
	Rule     string
	Deadline int64 // CLOCK_BOOTTIME ns
	FD       int   // pidfd, or -1

	proc  *Proc
	index int // in the heap; -1 once popped or removed
}

// Proc returns the table entry of the agent, which stays linked to its
// descendants until Table.Release.
func (a *Agent) Proc() *Proc { return a.proc }

// Deadlines is a min-heap of agents by deadline. It is safe for concurrent
// use; Rearm is called (outside the lock) whenever the earliest deadline
// moves earlier, so a single timer can follow it.
type Deadlines struct {
	mu    sync.Mutex
	h     agentHeap
	Rearm func(next int64)
}

// Add queues a.
func (d *Deadlines) Add(a *Agent) {
	d.mu.Lock()
	heap.Push(&d.h, a)
	first := d.h[0] == a
	d.mu.Unlock()
	if first && d.Rearm != nil {
		d.Rearm(a.Deadline)
	}
}

// Remove takes a out of the queue. It reports false if a was not queued
// (already due and handed out): the caller then does not own it.
func (d *Deadlines) Remove(a *Agent) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.index < 0 || a.index >= len(d.h) || d.h[a.index] != a {
		return false
	}
	heap.Remove(&d.h, a.index)
	return true
}

// Queued reports whether a is still waiting for its deadline.
func (d *Deadlines) Queued(a *Agent) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return a.index >= 0 && a.index < len(d.h) && d.h[a.index] == a
}

// PopDue removes and returns, appended to buf, every agent whose deadline is
// at or before now, earliest first, and the next deadline (0 if none).
func (d *Deadlines) PopDue(now int64, buf []*Agent) ([]*Agent, int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.h) > 0 && d.h[0].Deadline <= now {
		buf = append(buf, heap.Pop(&d.h).(*Agent))
	}
	if len(d.h) == 0 {
		return buf, 0
	}
	return buf, d.h[0].Deadline
}

// Next is the earliest deadline, or 0 if none is queued.
func (d *Deadlines) Next() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.h) == 0 {
		return 0
	}
	return d.h[0].Deadline
}

// Len is the number of queued agents.
func (d *Deadlines) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.h)
}

// Snapshot copies the queued agents, earliest first is not guaranteed.
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
// age changes) and rearms the timer.
func (d *Deadlines) Reschedule(fn func(a *Agent) int64) {
	d.mu.Lock()
	for _, a := range d.h {
		a.Deadline = fn(a)
	}
	heap.Init(&d.h)
	next := int64(0)
	if len(d.h) > 0 {
		next = d.h[0].Deadline
	}
	d.mu.Unlock()
	if next != 0 && d.Rearm != nil {
		d.Rearm(next)
	}
}

type agentHeap []*Agent

func (h agentHeap) Len() int { return len(h) }
func (h agentHeap) Less(i, j int) bool {
	if h[i].Deadline != h[j].Deadline {
		return h[i].Deadline < h[j].Deadline
	}
	return h[i].PID < h[j].PID
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
