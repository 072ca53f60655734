package tracker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"go.uber.org/zap"
)

// ProcInfo is what a /proc read says about one process.
type ProcInfo struct {
	PID, PPID int32
	Start     Start
	Comm      string
	State     byte // 'R', 'S', 'Z', ...: of the thread-group leader
	Kthread   bool // PF_KTHREAD: never an agent, never signalled
	Exiting   bool // PF_EXITING: the leader thread is in do_exit
	Threads   int  // num_threads: live threads, the leader counted while it is a zombie
}

// leaderDead reports whether the thread-group leader has exited or is
// exiting. The process may live on in its other threads: after
// pthread_exit in the leader, the leader stays a zombie (delay_group_leader
// in kernel/exit.c) until the last thread exits.
func (i *ProcInfo) leaderDead() bool {
	return i.Exiting || i.State == 'Z' || i.State == 'X' || i.State == 'x'
}

// Live reports whether the process is alive: its leader is, or another of
// its threads is.
func (i *ProcInfo) Live() bool { return !i.leaderDead() || i.Threads > 1 }

// ProcReader reads /proc. It must be safe for concurrent use: the table
// calls it from the goroutine that feeds it events (Apply, Merge), from
// the /proc retry timer (procRetries.run), from the reaper's goroutines (Retry,
// Descendants), from reloads, control commands and the resource sampler,
// and from Exited (the init's reaper). Most calls hold the table's lock,
// but Apply's exec and Exited read Stat without it, beside a locked call
// from another goroutine; the daemon runs Scan beside them all. ProcFS is
// safe: Stat's and KeepMarked's buffers are each guarded by a mutex, the
// other reads use their own. Errors for a vanished process must satisfy
// errors.Is(err, ErrGone).
type ProcReader interface {
	Stat(pid int32) (ProcInfo, error)
	Cmdline(pid int32) (string, error)
	// KeepMarked reports whether the process's environment holds
	// REAPER_KEEP=1. An environment that cannot be read because the
	// process is exiting (a zombie has none) satisfies ErrGone; one that
	// gives no answer (being replaced by execve, or empty), ErrNoEnviron.
	KeepMarked(pid int32) (bool, error)
	// Cgroup reads /proc/PID/cgroup (cgroup.go: when, and what it costs).
	Cgroup(pid int32) (cgroupinfo.Info, error)
	Scan() ([]ProcInfo, error)
}

// ErrGone means the process no longer exists.
var ErrGone = errors.New("process gone")

// Clock reads CLOCK_BOOTTIME and the offset to add to a CLOCK_MONOTONIC
// reading (a proc event timestamp) to get boottime.
type Clock interface {
	Now() int64
	BootOffset() int64
}

// Pinner opens a handle on pid that cannot outlive the process (a pidfd) and
// checks that the process holding pid started at start. The returned fd is
// owned by the caller.
type Pinner func(pid int32, start Start) (fd int, err error)

// Config configures a Table.
type Config struct {
	Rules  []Rule
	Under  []Ancestor
	MaxAge time.Duration
	Proc   ProcReader
	Clock  Clock
	Pin    Pinner // nil: agents get FD -1
	Queue  *Deadlines
	Log    *zap.Logger
	// Leftovers: kill the members of a session still alive LeftoverGrace
	// after its agent exited (false: keep them). Keep rules are root's
	// word: they exempt processes (and their descendants) from every
	// policy but a manual kill, max age included. REAPER_KEEP=1 in a
	// process's environment only spares it (and its descendants) from
	// leftover kills and from its agent's tree kill at max age; NoKeepEnv
	// (--keep-env=false) ignores it. See marks.go, "Keep marks".
	Leftovers     bool
	LeftoverGrace time.Duration
	Keep          []Rule
	NoKeepEnv     bool
	// DryRun: a fired deadline kills nothing, so an agent fired in a dry
	// run still leaves leftovers when it exits.
	DryRun bool
	// OnNotice, if set, is told of agents found, deadlines moved and
	// leftovers queued (notify.go). It may be called with the table's lock
	// held: it must not block and must not call back into the table.
	OnNotice func(Notice)
}

// Proc is one live process in the table. Its fields are guarded by the
// table's lock.
type Proc struct {
	PID     int32
	PPID    int32 // the parent at fork (or at scan); not updated on reparenting
	Start   Start
	Comm    string
	Cmdline string // read only for agent candidates
	Kthread bool

	parent, child, next, prev *Proc
	agent                     *Agent
	holds                     int
	dead                      bool
	// threads counts the threads other than the leader, from thread fork
	// and exit events (and num_threads at a scan). leaderGone marks a
	// process whose leader thread exited while others ran on: it stays
	// until the last of them exits.
	threads    int32
	leaderGone bool
	// forkCopy: p carries the name and command line its parent had at
	// the fork, and has not exec'd or renamed since. An agent matched by
	// them is one only until its first exec or rename says what it is
	// (ownIdentityLocked); agent status is sticky from then on.
	forkCopy bool

	// session is the session p belongs to (sessions.go); snext and sprev
	// link its members. marks memoises p's keep marks (marks.go).
	session      *Session
	snext, sprev *Proc
	marks        keepMarks
	// killFor is the session whose kill p's queued or fired agent counts
	// toward (Session.pending), until the agent leaves the queue or the
	// reaper releases p (resources.go).
	killFor *Session
}

// Counters are cumulative counts kept by the table.
type Counters struct {
	Events   [5]uint64 // fork, exec, comm, exit, other (threads included)
	Resyncs  uint64
	Stale    uint64 // events ignored: a newer process holds the pid, or older than a resync scan
	ProcErrs uint64 // /proc reads that failed for another reason than a vanished process
}

// Table is the process table. Apply and Merge must be called from one
// goroutine; the query methods may be called from any.
//
// Its lock, mu, guards the entries, the sessions and the parts below. Any
// function or method named …Locked, the table's or a part's, runs with mu
// held. Each part owns its own state and gets what it needs of the others
// when NewTable makes it: a small interface of its own (met by the table
// or another part) or a plain value. Only two of them take mu themselves:
// procRetries.run, which a timer calls, and goneWaiters.wait, which looks
// under it and waits without it.
type Table struct {
	mu    sync.Mutex
	cfg   Config // as given: the rules, keep rules and limits in force are the parts'
	procs map[int32]*Proc
	free  []*Proc
	c     Counters
	log   *zap.Logger

	// scanStart is the boottime at which the last resync scan began: the
	// scan shows the effect of every event stamped earlier, so such events,
	// still queued in the socket, are stale. Used by the applying goroutine only.
	scanStart int64

	maxAge   atomic.Int64
	events   [5]atomic.Uint64
	deadline func(*Agent) int64 // agentDeadline, bound once

	// Sessions (sessions.go), guarded by mu.
	sessions      map[SessionID]*Session
	sessGen       uint64
	members       int // live members of all sessions
	leftovers     bool
	leftoverGrace time.Duration
	exitAt        int64 // the exit event's time while exit() removes a process

	// The parts, guarded by mu (notes never changes).
	rules   agentRules  // the agent rules and scope in force (rules.go)
	keep    keeper      // keep marks: root's keep and REAPER_KEEP=1 (marks.go)
	leases  leaseBook   // root's word on single processes, through the control socket (leases.go)
	kills   killer      // kill orders: now, and again after a failed kill (kills.go, retry.go)
	limits  limits      // the session limits checked here: procs at fork, SessionMembers' reads (resources.go)
	retries procRetries // /proc reads that failed for another reason than an exit, to retry (procretry.go)
	exited  exitLog     // the exits Exited was told of, until a scan no longer shows them (exited.go)
	gone    goneWaiters // the waiters of WaitGone (gone.go)
	notes   notifier    // Config.OnNotice (notify.go)
}

// Test hooks for the orders in which a reload and a match can interleave.
var (
	testHookBeforeQueue   func() // matchLocked, between deciding and queueing
	testHookBeforeResched func() // SetMaxAge, between storing and rescheduling
)

// NewTable returns an empty table.
func NewTable(cfg Config) *Table {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Queue == nil {
		cfg.Queue = &Deadlines{}
	}
	t := &Table{cfg: cfg, procs: make(map[int32]*Proc, 1024), log: cfg.Log,
		sessions: map[SessionID]*Session{}, leftovers: cfg.Leftovers, leftoverGrace: cfg.LeftoverGrace,
		notes: notifier(cfg.OnNotice)}
	t.maxAge.Store(int64(cfg.MaxAge))
	t.deadline = t.agentDeadline
	t.rules = agentRules{rules: cfg.Rules, under: cfg.Under, proc: cfg.Proc}
	t.leases = leaseBook{queue: cfg.Queue, deadline: t.deadline, notes: t.notes}
	t.keep = keeper{rules: cfg.Keep, env: !cfg.NoKeepEnv, over: &t.leases, proc: cfg.Proc, errs: t, log: cfg.Log}
	t.kills = killer{queue: cfg.Queue, clock: cfg.Clock, pin: cfg.Pin, proc: cfg.Proc, errs: t, judge: &t.keep,
		log: cfg.Log, dryRun: cfg.DryRun}
	t.limits = limits{dryRun: cfg.DryRun, judge: &t.keep, kill: &t.kills, log: cfg.Log}
	t.retries = procRetries{mu: &t.mu, clock: cfg.Clock, log: cfg.Log, redo: t, errs: t}
	return t
}

// Queue returns the deadline queue the table feeds.
func (t *Table) Queue() *Deadlines { return t.cfg.Queue }

// Deadline is the deadline of a process that started at s.
func (t *Table) Deadline(s Start) int64 { return s.Latest() + t.maxAge.Load() }

// MaxAge is the current maximum age.
func (t *Table) MaxAge() time.Duration { return time.Duration(t.maxAge.Load()) }

// SetRules replaces the agent rules and ancestors and judges every process
// again: agents that no longer match leave the queue and their sessions are
// dissolved (rejudge.go), new agents are queued (from their own start).
func (t *Table) SetRules(rules []Rule, under []Ancestor) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules.rules, t.rules.under = rules, under
	t.rejudgeLocked()
	for _, p := range t.procs {
		t.matchLocked(p, false)
	}
}

// agentDeadline is an agent's deadline under the max age in force, plus
// its lease (leases.go): a reload keeps the extends. Other reasons (a
// leftover's kill time) do not move with it.
func (t *Table) agentDeadline(a *Agent) int64 {
	if a.Reason != ReasonMaxAge || a.Attempt > 0 {
		return a.Deadline
	}
	if a.until != 0 {
		return a.until
	}
	return t.Deadline(a.Start) + a.extra
}

// SetMaxAge changes the maximum age and recomputes every queued deadline
// from its agent's own start: a reload never resets an agent's age. An agent
// being matched meanwhile gets the new deadline too: its deadline is computed
// under the queue's lock (AddWith), so it is queued either after this store
// or before this reschedule.
func (t *Table) SetMaxAge(d time.Duration) {
	t.maxAge.Store(int64(d))
	if testHookBeforeResched != nil {
		testHookBeforeResched()
	}
	if t.notes == nil {
		t.cfg.Queue.Reschedule(t.deadline)
		return
	}
	// The notices go out after the queue's lock is released.
	var moved []Notice
	collect := notifier(func(n Notice) { moved = append(moved, n) })
	t.cfg.Queue.Reschedule(func(a *Agent) int64 {
		next := t.deadline(a)
		collect.deadlineMovedLocked(a, a.Deadline, next, "reload")
		return next
	})
	for _, n := range moved {
		t.notes.send(n)
	}
}

func eventIndex(ty procevents.Type) int {
	switch ty {
	case procevents.Fork:
		return 0
	case procevents.Exec:
		return 1
	case procevents.Comm:
		return 2
	case procevents.Exit:
		return 3
	}
	return 4
}

// Apply updates the table with one proc connector event.
func (t *Table) Apply(ev *procevents.Event) {
	t.events[eventIndex(ev.Type)].Add(1)
	switch ev.Type {
	case procevents.Fork, procevents.Exit:
	case procevents.Exec, procevents.Comm:
		if !ev.Leader() {
			return // a thread's rename says nothing about the process
		}
	default:
		return
	}
	at := int64(ev.Timestamp) + t.cfg.Clock.BootOffset()
	if at < t.scanStart {
		// Older than the resync scan, which already shows its effect: applied
		// now, a fork could resurrect a process the scan saw gone, or link a
		// child to an earlier holder of its parent's PID. Only what the
		// scan cannot show is taken from it: the lineage of a fork whose
		// child the scan added (staleFork).
		if ev.Type == procevents.Fork && ev.Leader() && t.staleFork(ev, at) {
			return
		}
		t.mu.Lock()
		t.c.Stale++
		t.mu.Unlock()
		return
	}
	if !ev.Leader() {
		t.thread(ev, at)
		return
	}
	switch ev.Type {
	case procevents.Fork:
		t.fork(ev, at)
	case procevents.Exec:
		t.exec(ev.TGID)
	case procevents.Comm:
		t.comm(ev.TGID, ev.Comm[:], at)
	case procevents.Exit:
		t.exit(ev.TGID, at)
	}
}

func (t *Table) fork(ev *procevents.Event, at int64) {
	start := Start{NS: at, Exact: true}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.procs[ev.TGID]; old != nil {
		if old.Start.Same(start) {
			// Seen by a scan already; keep its lineage, learn the exact start
			// and join its parent's session as a fork does (a scan gives
			// membership only while the session's agent lives).
			old.Start = start
			t.lateForkLocked(old, ev.ParentTGID)
			return
		}
		if old.Start.After(start.NS) {
			// A late fork event: a newer process holds the PID already.
			t.c.Stale++
			return
		}
		t.removeLocked(old)
	}
	parent := t.procs[ev.ParentTGID]
	if parent != nil && parent.Start.StartedAfter(start) {
		parent = nil // a newer holder of the parent's PID
	}
	p := t.newLocked(ev.TGID, ev.ParentTGID, start)
	if parent != nil {
		// A child starts with its parent's name and command line.
		p.Comm, p.Cmdline, p.Kthread = parent.Comm, parent.Cmdline, parent.Kthread
		p.forkCopy = true
		t.linkLocked(p, parent)
		t.inheritLocked(p, true)
		t.limits.forkLocked(p)
	}
	if p.Comm != "" {
		t.matchLocked(p, false)
	}
}

// staleFork handles a fork event stamped before the last resync scan
// began (events queued across a netlink overflow arrive after the rescan).
// The scan shows its effect, but not its lineage: a child it added after
// its session's agent exited got no membership (inheritLocked). If the
// child is in the table under the event's start, the event gives it that
// membership (lateForkLocked, which checks the parent as fork does). It
// reports whether the event was used.
func (t *Table) staleFork(ev *procevents.Event, at int64) bool {
	start := Start{NS: at, Exact: true}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[ev.TGID]
	if p == nil || p.dead || !p.Start.Same(start) {
		return false // gone, or a newer holder of the PID: the scan's word stands
	}
	p.Start = start
	t.lateForkLocked(p, ev.ParentTGID)
	return true
}

// lateForkLocked handles the fork event of p, which a resync scan added
// before the event arrived: the kernel names its parent, so it joins the
// parent's session as a forked child does, whether or not the session's
// agent still lives (a scan alone gives membership only while it does).
// So do the processes the scan linked below it that are in no session:
// their own fork events may be among those lost.
func (t *Table) lateForkLocked(p *Proc, ppid int32) {
	if p.session != nil {
		return
	}
	parent := t.procs[ppid]
	if parent == nil || parent == p || parent.dead || parent.Start.StartedAfter(p.Start) {
		return // not tracked, or a newer holder of the parent's PID
	}
	if p.parent != parent {
		// The scan linked it under its parent of the moment (a reaper, if
		// the parent had exited): the fork names the parent at fork.
		t.unlinkLocked(p)
		t.linkLocked(p, parent)
		p.PPID = ppid
	}
	t.inheritLocked(p, true)
	s := p.session
	if s == nil {
		return
	}
	var walk func(n *Proc)
	walk = func(n *Proc) {
		for c := n.child; c != nil; c = c.next {
			if c.session != nil {
				continue // in a session already, with what lies below it
			}
			if !c.dead {
				t.addMemberLocked(s, c)
				t.keep.scanMarksLocked(c, n)
			}
			walk(c)
		}
	}
	walk(p)
	t.limits.forkLocked(p)
}

// thread counts a thread's fork or exit in its process. The exit of the
// last thread of a process whose leader exited first is the process's exit.
func (t *Table) thread(ev *procevents.Event, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[ev.TGID]
	if p == nil || p.Start.After(at) {
		return // not tracked, or a thread of an earlier holder of the PID
	}
	if ev.Type == procevents.Fork {
		p.threads++
		return
	}
	if p.threads > 0 {
		p.threads--
	}
	if p.leaderGone {
		t.leaderExitLocked(p, true)
	}
}

// leaderExitLocked handles the exit of p's leader thread (or, threadExit,
// of another thread after it): p is removed unless /proc shows it alive in
// other threads. The exit event is sent from do_exit before the thread is
// released (exit_notify → release_task), so the exiting thread may still be
// counted in num_threads; the event count tells whether it is the last.
func (t *Table) leaderExitLocked(p *Proc, threadExit bool) {
	info, err := t.cfg.Proc.Stat(p.PID)
	if err != nil && !errors.Is(err, ErrGone) {
		t.procErr(p.PID, err)
		p.leaderGone = true // keep it: better a stale entry than a lost agent
		return
	}
	alive := err == nil && p.Start.Same(info.Start) && info.Live()
	if alive && threadExit && info.leaderDead() && p.threads == 0 && info.Threads <= 2 {
		// The leader zombie and the exiting thread, which every event
		// so far says is the last.
		alive = false
	}
	if !alive {
		t.removeLocked(p)
		return
	}
	p.leaderGone = true
	if threadExit && p.threads == 0 {
		// More threads than the events showed (a count taken at a scan
		// can be short): take /proc's, less the leader and this one.
		p.threads = int32(max(info.Threads-2, 0))
	}
}

func (t *Table) exec(pid int32) {
	info, err := t.cfg.Proc.Stat(pid)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		// Retried unless the process is gone (procretry.go): a failed read here
		// would leave an agent unmatched.
		var start Start
		if p := t.procs[pid]; p != nil {
			start = p.Start
			// Its environment and name changed unread (it may have exited
			// at once, as `REAPER_KEEP=1 sh -c 'x & exit'` does): the marks
			// copied from its parent at fork say nothing any more. A fork it
			// made meanwhile reads it again, or its child's copy.
			p.marks.rule, p.marks.env = keepUnknown, keepUnknown
		}
		t.retries.failLocked(pid, start, retryExec, err)
		return
	}
	t.execLocked(pid, info)
}

// execLocked applies the exec of pid, which /proc shows as info.
func (t *Table) execLocked(pid int32, info ProcInfo) {
	p := t.procs[pid]
	if p == nil || !p.Start.Same(info.Start) {
		// The fork was lost or the PID was reused since: take /proc's word.
		if p != nil {
			t.removeLocked(p)
		}
		p = t.insertLocked(info)
		if p == nil {
			return
		}
	}
	// Exec leaves one thread (de_thread), which takes the leader's PID
	// when it was another thread that called execve.
	p.threads, p.leaderGone = 0, false
	if a := p.agent; a != nil && a.Reason == ReasonMaxAge && p.Comm != info.Comm {
		t.log.Debug("agent exec'd another program: stays an agent", zap.Int32("pid", p.PID), zap.String("comm", info.Comm),
			zap.String("was", p.Comm), zap.String("rule", a.Rule))
	}
	p.Comm, p.Cmdline, p.Kthread = info.Comm, "", info.Kthread
	t.execKeepLocked(p)
	t.ownIdentityLocked(p, "exec")
	t.matchLocked(p, true)
}

// execKeepLocked decides p's keep mark again after an exec: a new
// environment, so REAPER_KEEP=1 is read again. A resync scan that shows a
// process under a new name calls it too: the exec may be among the events
// lost.
func (t *Table) execKeepLocked(p *Proc) {
	// A new name, command line and environment: the keep rules and
	// REAPER_KEEP=1 are decided again; what p descends from stays.
	p.marks.rule, p.marks.env = keepUnknown, keepUnknown
	if s := p.session; s != nil && s.agent == p {
		t.keep.agentEnvLocked(s) // exec env REAPER_KEEP=1 <agent>
	}
}

func (t *Table) comm(pid int32, name []byte, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[pid]
	if p == nil || p.Comm == procevents.CommString(name) {
		return
	}
	if p.Start.After(at) {
		// A rename by an earlier holder of this PID, still queued when a
		// resync saw the new one.
		t.c.Stale++
		return
	}
	if a := p.agent; a != nil && a.Reason == ReasonMaxAge {
		t.log.Debug("agent renamed: stays an agent", zap.Int32("pid", p.PID), zap.String("comm", procevents.CommString(name)),
			zap.String("was", p.Comm), zap.String("rule", a.Rule))
	}
	// A rename may drop a --keep rule's keep, never gain one: the keep
	// rules name programs root chose, and any process can take any name.
	// So the old name is judged first (memoised, read if need be); kept,
	// the new name and command line are judged again, else it stays
	// not kept. The environment is the same (only exec changes it), so a
	// REAPER_KEEP=1 read already stands.
	was := t.keep.ruleKeptLocked(p, nil)
	p.Comm = procevents.CommString(name)
	// process.title rewrites the command line too: read again when a
	// rule needs it (matchLocked below reads it for agent rules).
	p.Cmdline = ""
	p.marks.rule = keepNo
	if was != keepNo {
		// Kept, or not known (a failed read): judged again on the new
		// name. A rename still never gains a keep the old name lacked.
		p.marks.rule = keepUnknown
	}
	t.ownIdentityLocked(p, "rename")
	t.matchLocked(p, true)
}

func (t *Table) exit(pid int32, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[pid]
	if p == nil {
		return
	}
	if p.Start.After(at) {
		t.c.Stale++ // the exit of an earlier holder of this PID
		return
	}
	if p.threads > 0 || p.leaderGone {
		// The leader thread exited; other threads may run on (pthread_exit
		// in the leader, or a non-leader thread's execve, whose de_thread
		// kills the leader and takes its PID; the exec event follows).
		t.exitAt = at
		t.leaderExitLocked(p, false)
		t.exitAt = 0
		return
	}
	t.exitAt = at
	t.removeLocked(p)
	t.exitAt = 0
}

// Exited tells the table that pid has exited, at boottime at (exited.go).
// The caller is its parent and calls this before it reaps it (waitid(2)
// with WNOWAIT first): while the zombie holds the PID, no other process can
// take it, so the entry under pid is this process or an earlier holder
// whose exit went unseen, dead either way. Its start time is read from the
// zombie's /proc/PID/stat, which the kernel keeps until the zombie is
// reaped.
//
// A /proc scan taken before the exit still shows the process alive; Merge
// would bring it back. So the exit is remembered (PID and start time) until
// a scan no longer shows that process. With no scan in flight (ScanStart)
// nothing needs remembering, and nothing is read: a scan that starts after
// the exit shows a zombie (gone, to Merge) or nothing. That is the common
// case under `supervisor init`, where every orphan's exit comes here.
func (t *Table) Exited(pid int32, at int64) {
	if !t.exited.scanning() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if p := t.procs[pid]; p != nil {
			t.exitAt = at
			t.removeLocked(p)
			t.exitAt = 0
		}
		return
	}
	info, err := t.cfg.Proc.Stat(pid)
	known := err == nil
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil && !errors.Is(err, ErrGone) {
		t.c.ProcErrs++
	}
	if known {
		t.exited.recordLocked(pid, info.Start)
	}
	p := t.procs[pid]
	if p == nil {
		return
	}
	if known && !p.Start.Same(info.Start) && p.Start.StartedAfter(info.Start) {
		// Not possible while the zombie holds the PID; never remove a
		// process that started after the one that exited.
		return
	}
	t.exitAt = at
	t.removeLocked(p)
	t.exitAt = 0
}

// procErr counts and warns of a /proc read that failed for another reason
// than the process's exit (rate-limited, procretry.go). Call it with the
// table's lock held.
func (t *Table) procErr(pid int32, err error) {
	if errors.Is(err, ErrGone) {
		return // it exited already; its exit event follows
	}
	t.c.ProcErrs++
	t.retries.warnLocked(pid, err)
}

// cgroupLocked reads p's cgroup; unknown (zero) when the read fails.
func (t *Table) cgroupLocked(p *Proc) cgroupinfo.Info { return cgroupOf(t.cfg.Proc, t, p) }

// fillCmdline reads q's command line if it is not known yet; a read that
// fails leaves it unknown and is told to errs (nil: to nobody). Under the
// table's lock.
func fillCmdline(proc ProcReader, errs readErrs, q *Proc) {
	if q.Cmdline != "" {
		return
	}
	cl, err := proc.Cmdline(q.PID)
	switch {
	case err == nil:
		q.Cmdline = cl
	case errs != nil:
		errs.procErr(q.PID, err)
	}
}

// redoExecLocked applies an exec whose stat read failed (procretry.go), if
// the process that exec'd (identity start; zero if the table did not hold
// it) still lives.
func (t *Table) redoExecLocked(pid int32, start Start) {
	info, err := t.cfg.Proc.Stat(pid)
	if err != nil {
		t.retries.failLocked(pid, start, retryExec, err)
		return
	}
	if start.NS != 0 {
		if p := t.procs[pid]; p == nil || !p.Start.Same(start) || !info.Start.Same(start) {
			return // it exited since
		}
	}
	t.execLocked(pid, info)
}

// redoMatchLocked matches a process again whose match could not read
// /proc (procretry.go), if it still lives.
func (t *Table) redoMatchLocked(pid int32, start Start) {
	p := t.procs[pid]
	if p == nil || p.dead || !p.Start.Same(start) {
		return
	}
	t.matchLocked(p, true)
}

// RetriesPending is the number of processes whose /proc read waits to be
// retried.
func (t *Table) RetriesPending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.retries.lenLocked()
}

// Close stops the /proc retry timer: no retry runs from then on, and none
// is armed again. Call it at shutdown, once nothing feeds the table any
// more. Calling it again does nothing.
func (t *Table) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.retries.closeLocked()
}

// ScanStart tells the table that a /proc scan is about to be read, to be
// merged (Merge, MergeAt) or dropped; call done once it was, or was
// dropped. While a scan is in flight, Exited reads the start time of each
// exit it is told of and remembers the exit against that scan (exited.go).
func (t *Table) ScanStart() (done func()) { return t.exited.scanStart() }

// Merge reconciles the table with a /proc scan: processes the scan shows
// that the table lacks (or holds under an older identity) are added,
// processes the table holds that the scan lacks are removed, and renamed
// ones are matched again. Zombies count as gone. Lineage and exact start
// times already known are kept.
//
// Stale entries go before anything is inserted or linked, so that a new
// process is never linked to an earlier holder of its parent's PID.
func (t *Table) Merge(scan []ProcInfo, resync bool) { t.MergeAt(scan, resync, 0) }

// MergeAt is Merge for a scan that began at boottime scanStart (0: unknown).
// Events stamped before scanStart are ignored from then on (counted as
// Stale): the scan shows their effect already, all but the lineage a fork
// event gives a child the scan added (staleFork). Call it from the
// goroutine that calls Apply.
func (t *Table) MergeAt(scan []ProcInfo, resync bool, scanStart int64) {
	t.scanStart = max(t.scanStart, scanStart)
	t.mu.Lock()
	defer t.mu.Unlock()
	if resync {
		t.c.Resyncs++
	}
	live := make(map[int32]*ProcInfo, len(scan))
	for i := range scan {
		if info := &scan[i]; info.Live() && !t.exited.toldLocked(info) {
			live[info.PID] = info
		}
	}
	t.exited.pruneLocked(scan)
	for pid, p := range t.procs {
		if info, ok := live[pid]; !ok || !p.Start.Same(info.Start) {
			t.removeLocked(p)
		}
	}
	if resync {
		refreshCgroupsLocked(t.procs, t.cfg.Proc, t, t.cfg.Queue)
	}
	var changed []*Proc
	for pid, info := range live {
		p := t.procs[pid]
		if p != nil {
			p.setThreads(info)
		}
		switch {
		case p == nil:
			p = t.newLocked(info.PID, info.PPID, info.Start)
			p.Comm, p.Kthread = info.Comm, info.Kthread
			p.setThreads(info)
		case p.Comm != info.Comm:
			p.Comm = info.Comm
			// An exec may hide behind the new name (its event lost, or
			// polling): the mark is read again.
			t.execKeepLocked(p)
			t.ownIdentityLocked(p, "rename")
		default:
			continue
		}
		changed = append(changed, p)
	}
	for _, p := range changed {
		if p.parent == nil {
			t.linkParentLocked(p)
		}
	}
	// Sessions pass from parent to child: a parent first seen in this
	// scan must have its session before its children look at it.
	pending := make(map[*Proc]bool, len(changed))
	for _, p := range changed {
		pending[p] = true
	}
	var inherit func(p *Proc)
	inherit = func(p *Proc) {
		if !pending[p] {
			return
		}
		delete(pending, p)
		if p.parent != nil {
			inherit(p.parent)
		}
		if p.session == nil {
			t.inheritLocked(p, false)
		}
	}
	for _, p := range changed {
		inherit(p)
	}
	for _, p := range changed {
		t.matchLocked(p, true)
	}
}

// linkParentLocked links p under the entry holding its PPID, unless that
// entry started after p: then it is a newer holder of the PID, not p's
// parent.
func (t *Table) linkParentLocked(p *Proc) {
	if parent := t.procs[p.PPID]; parent != nil && parent != p && !parent.Start.StartedAfter(p.Start) {
		t.linkLocked(p, parent)
	}
}

// insertLocked adds a process known from /proc, linked to its parent when
// the parent is in the table.
func (t *Table) insertLocked(info ProcInfo) *Proc {
	if !info.Live() {
		return nil
	}
	p := t.newLocked(info.PID, info.PPID, info.Start)
	p.Comm, p.Kthread = info.Comm, info.Kthread
	p.setThreads(&info)
	t.linkParentLocked(p)
	t.inheritLocked(p, false)
	return p
}

// setThreads takes the thread count and leader state from /proc.
func (p *Proc) setThreads(info *ProcInfo) {
	p.threads = int32(max(info.Threads-1, 0))
	p.leaderGone = info.leaderDead()
}

func (t *Table) newLocked(pid, ppid int32, s Start) *Proc {
	var p *Proc
	if n := len(t.free); n > 0 {
		p = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		p = new(Proc)
	}
	*p = Proc{PID: pid, PPID: ppid, Start: s}
	t.procs[pid] = p
	return p
}

func (t *Table) linkLocked(p, parent *Proc) {
	p.parent = parent
	p.prev = nil
	p.next = parent.child
	if parent.child != nil {
		parent.child.prev = p
	}
	parent.child = p
}

func (t *Table) unlinkLocked(p *Proc) {
	if p.parent == nil {
		return
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		p.parent.child = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.parent, p.next, p.prev = nil, nil, nil
}

// removeLocked drops p from the PID map. Its queued agent, if any, leaves
// the queue. A held entry (an agent being reaped) keeps its place in the
// tree, so its descendants stay reachable, until Release.
func (t *Table) removeLocked(p *Proc) {
	if t.procs[p.PID] == p {
		delete(t.procs, p.PID)
	}
	p.dead = true
	t.gone.wakeLocked(p.PID)
	t.leases.endLocked(p)
	fired, root := false, false
	var k *kill
	if a := p.agent; a != nil {
		p.agent = nil
		if t.cfg.Queue.Remove(a) {
			closeFD(a.FD)
			p.holds--
			switch {
			case a.Attempt > 0:
				// A retry of a failed kill whose process exited first:
				// what lives below it is retried in its place (retry.go).
				t.kills.retryBelowLocked(p, a)
			case a.Reason == ReasonMaxAge:
			case a.Reason == ReasonLeftover:
				root = true
			default:
				// A kill now (memory, procs, idle, pressure, manual) whose
				// process exited before it fired: what it would have
				// killed is killed now, for the same reason.
				k = &kill{why: a.Reason, by: a.RequestedBy, fig: a.Figures}
			}
		} else {
			fired = true
		}
	}
	s := p.session
	if s != nil {
		t.memberExitLocked(p, s, fired, root, k)
	}
	if fired && p.holds > 0 {
		// The reaper chases p's tree until it releases p: the session is
		// being killed until then.
		pend(p, s)
	} else {
		unpend(p)
	}
	if p.holds == 0 {
		t.freeLocked(p)
	}
}

// freeLocked gives p's children to p's parent, as the kernel gives orphans to
// a reaper, so that the descendants of an agent stay its descendants even
// when a process between them exits.
func (t *Table) freeLocked(p *Proc) {
	for c := p.child; c != nil; {
		next := c.next
		c.parent, c.next, c.prev = nil, nil, nil
		if p.parent != nil {
			t.linkLocked(c, p.parent)
		}
		c = next
	}
	p.child = nil
	t.unlinkLocked(p)
	unpend(p)
	*p = Proc{}
	t.free = append(t.free, p)
}

// matchLocked decides whether p is an agent and queues it.
// readCmdline forces a fresh read of the command line.
//
// Agent status is sticky: once queued (for its max age, as a leftover, for
// a kill now), nothing p does to itself — a rename (prctl PR_SET_NAME,
// process.title), an exec of another program — takes it off the queue or
// out of its session, nor changes the rule it matched: the Agent keeps the
// comm, command line and rule it was matched with. Only a reload that
// changes the rules or the scope (SetRules, rejudge.go) and root's control
// commands (leases.go) do. A process that becomes an agent by a rename or
// an exec is adopted here.
func (t *Table) matchLocked(p *Proc, readCmdline bool) {
	if p.agent != nil {
		return
	}
	if s := p.session; s != nil && s.agent == p {
		// Its session's agent without a queued deadline: kept, or its pin
		// failed. What it is was decided when it was matched.
		if t.keep.rootKeptLocked(p, s, nil) != keepYes {
			t.queueAgentLocked(p, s.Rule, s.Comm, s.cmdline, s.Cgroup)
		}
		return
	}
	rule, ok, err := t.rules.matchLocked(p, readCmdline)
	if err != nil {
		t.retries.failLocked(p.PID, p.Start, retryMatch, err)
		return
	}
	if !ok {
		return
	}
	cg, cgErr := t.cfg.Proc.Cgroup(p.PID)
	if cgErr != nil {
		cg = cgroupinfo.Info{}
	}
	if !t.rules.underLocked(p, cg) {
		if cgErr != nil && t.rules.cgroupScopeLocked() {
			// A cgroup scope may be what the failed read would have shown.
			t.retries.failLocked(p.PID, p.Start, retryMatch, cgErr)
			return
		}
		// Debug only: says the process was seen and judged, which a test
		// of scope needs to tell "left alone" from "never noticed".
		t.log.Debug("out of scope", zap.Int32("pid", p.PID), zap.String("comm", p.Comm), zap.String("rule", rule),
			zap.String("cgroup", cg.Path))
		return
	}
	if cgErr != nil {
		t.procErr(p.PID, cgErr) // attribution only: the agent is in scope anyway
	}
	if p.session == nil {
		s := t.newSessionLocked(p, rule)
		s.Cgroup, s.cmdline = cg, p.Cmdline
	}
	if t.keep.rootKeptLocked(p, p.session, nil) == keepYes {
		// Root's keep (a --keep rule, a control-socket keep) exempts an
		// agent from max age; its own REAPER_KEEP=1 does not.
		return
	}
	t.queueAgentLocked(p, rule, p.Comm, p.Cmdline, cg)
}

// ownIdentityLocked handles the first exec or rename (cause) of a fork
// copy: an agent queued at its fork by its parent's name (a nested copy
// of its agent, which then execs git) stays an agent only if what it now
// is matches a rule; if not, it leaves the queue, and a session it heads
// is dissolved. It never escapes its parent's session, which it stays a
// member of. A failed read keeps it queued.
//
// A process inside a kill is never unqueued by something it did: not the
// retry of a failed kill (Attempt > 0; a retry of an agent's kill keeps
// the reason max_age), not one whose own kill is queued or in flight
// (killFor), not a member of a session being killed.
func (t *Table) ownIdentityLocked(p *Proc, cause string) {
	if !p.forkCopy {
		return
	}
	p.forkCopy = false
	a := p.agent
	if a == nil || a.Reason != ReasonMaxAge || a.Attempt > 0 || p.killFor != nil || !t.cfg.Queue.Queued(a) {
		return
	}
	if s := p.session; s != nil && t.busyLocked(s) {
		return
	}
	if _, ok, err := t.rules.matchLocked(p, true); ok || err != nil {
		return
	}
	if s := p.session; s != nil && s.agent == p {
		t.reviveLocked(t.dissolveLocked(s, cause, nil))
		return
	}
	t.unqueueLocked(p)
	// Its session's agent exited while it was still queued as a copy of
	// the agent (its own max-age deadline came no later than the agent's
	// exit + the leftover grace, so the exit left it queued as an agent):
	// now that it is no agent, it is what any member left behind is, a
	// leftover. Else a child forked before its agent exits, renamed or
	// exec'd after, would outlive every policy.
	if s := p.session; s != nil && s.agent == nil && s.ExitedAt != 0 {
		reads := 0
		t.candidateLocked(p, t.cfg.Clock.Now(), &LeaseResult{}, &reads)
	}
}

// queueAgentLocked queues p for its max age as an agent of rule, matched
// as comm and cmdline, in cgroup cg.
func (t *Table) queueAgentLocked(p *Proc, rule, comm, cmdline string, cg cgroupinfo.Info) {
	fd := -1
	if t.cfg.Pin != nil {
		var err error
		if fd, err = t.cfg.Pin(p.PID, p.Start); err != nil {
			if !errors.Is(err, ErrGone) {
				// EMFILE: as a failed read, retried and warned of.
				t.retries.addLocked(p.PID, p.Start, retryMatch)
				t.procErr(p.PID, fmt.Errorf("pin agent %d (%s): %w", p.PID, p.Comm, err))
			}
			return
		}
	}
	var sid SessionID
	if p.session != nil {
		sid = p.session.ID
	}
	a := &Agent{PID: p.PID, Start: p.Start, Comm: comm, Cmdline: cmdline, Rule: rule, FD: fd, proc: p,
		Reason: ReasonMaxAge, Session: sid, Cgroup: cg}
	t.leases.agentLocked(a)
	p.agent = a
	p.holds++
	if testHookBeforeQueue != nil {
		testHookBeforeQueue()
	}
	deadline := t.cfg.Queue.AddWith(a, t.deadline)
	t.notes.send(agentNotice(NoticeAgent, a, deadline))
	t.log.Debug("agent", zap.Int32("pid", p.PID), zap.String("comm", comm), zap.String("rule", rule),
		zap.Int64("deadline_boot_ns", deadline), zap.Int64("start_boot_ns", p.Start.NS), zap.Bool("start_exact", p.Start.Exact))
}

// unqueueLocked takes p's queued agent (or leftover) off the queue. It
// reports false if there is none or it fired already (the reaper has it).
func (t *Table) unqueueLocked(p *Proc) bool {
	a := p.agent
	if a == nil || !t.cfg.Queue.Remove(a) {
		return false
	}
	p.agent = nil
	closeFD(a.FD)
	p.holds--
	unpend(p)
	return true
}

func (t *Table) ruleLocked(p *Proc, readCmdline bool) (string, bool) {
	rule, ok, err := t.rules.matchLocked(p, readCmdline)
	if err != nil {
		t.procErr(p.PID, err)
	}
	return rule, ok
}

// findLocked returns the live entry for pid; a non-zero start must match.
func (t *Table) findLocked(pid int32, start Start) (*Proc, error) {
	p := t.procs[pid]
	if p == nil || p.dead || (start.NS != 0 && !p.Start.Same(start)) {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	return p, nil
}

// command runs fn on the live process pid (a non-zero start must match)
// with the table locked; fn adds what it did to the result made for p.
func (t *Table) command(pid int32, start Start, fn func(p *Proc, res *LeaseResult) error) (LeaseResult, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.findLocked(pid, start)
	if err != nil {
		return LeaseResult{}, err
	}
	res := leaseResult(p)
	err = fn(p, &res)
	return res, err
}

// Extend adds d to the allowance of the agent pid: its deadline becomes
// start + max age + the sum of its extends (or, after ExtendUntil, that
// deadline + d). A zero start matches any holder of pid.
func (t *Table) Extend(pid int32, start Start, d time.Duration) (LeaseResult, error) {
	if d <= 0 {
		return LeaseResult{}, fmt.Errorf("extend by %s: must be positive", d)
	}
	return t.lease(pid, start, func(l Lease) (Lease, error) {
		if l.Until != 0 {
			l.Until += int64(d)
		} else {
			l.Extra += d
		}
		if l.Extra > maxExtra {
			return l, fmt.Errorf("extends would add up to %s, more than %s", l.Extra, maxExtra)
		}
		return l, nil
	})
}

// ExtendUntil sets the deadline of the agent pid to until (boottime ns).
func (t *Table) ExtendUntil(pid int32, start Start, until int64) (LeaseResult, error) {
	if now := t.cfg.Clock.Now(); until <= now {
		return LeaseResult{}, fmt.Errorf("deadline %s ago is not in the future (to kill now, use kill)", time.Duration(now-until))
	}
	return t.lease(pid, start, func(l Lease) (Lease, error) {
		l.Until = until
		return l, nil
	})
}

// lease changes the lease of the agent pid with fn and moves its queued
// deadline (leases.go).
func (t *Table) lease(pid int32, start Start, fn func(Lease) (Lease, error)) (LeaseResult, error) {
	return t.command(pid, start, func(p *Proc, res *LeaseResult) error { return t.leases.moveLocked(p, fn, res) })
}

// LeaseGen changes whenever a lease changes or ends, so a caller can
// persist LeaseState only when there is something new.
func (t *Table) LeaseGen() uint64 { return t.gen(&t.leases.gen) }

// LeaseState returns every lease of a live process, for persisting.
func (t *Table) LeaseState() []Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.leases.stateLocked(t.procs)
}

// LoadLeases gives back the leases a previous run persisted. Call it
// before the start-up scan is merged, so that an agent is queued with its
// lease from the start (never at its bare max age, which may be past);
// then PruneLeases.
func (t *Table) LoadLeases(state []Lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.leases.loadLocked(state)
}

// PruneLeases drops the leases of processes that are gone (exited while no
// daemon ran, or their PID reused) and returns how many are left.
func (t *Table) PruneLeases() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.leases.pruneLocked(t.procs)
}

// Target is a process to signal: its PID and the start time that identifies it.
type Target struct {
	PID     int32
	Start   Start
	Comm    string
	Kthread bool
}

// Descendants appends to buf every live descendant of p, parents before
// children, including processes forked since the last call. Entries of
// processes that exited while held are walked through, not returned. A
// process the kill for why spares (sparedLocked: root's keep for every
// reason but manual; REAPER_KEEP=1 too for a leftover kill and an agent's
// tree at max age) is left out with everything below it. Marks are read
// here, only for processes about to be signalled.
func (t *Table) Descendants(p *Proc, why Reason, buf []Target) []Target {
	t.mu.Lock()
	defer t.mu.Unlock()
	reads := 0 // marksPerProc per process judged
	var walk func(n *Proc)
	walk = func(n *Proc) {
		start := len(buf)
		for c := n.child; c != nil; c = c.next {
			if c.dead {
				continue
			}
			if reads += marksPerProc; !t.keep.sparedLocked(c, c.session, why, &reads) {
				buf = append(buf, Target{PID: c.PID, Start: c.Start, Comm: c.Comm, Kthread: c.Kthread})
			}
		}
		// Into the dead and the targets just taken, in the same order
		// (buf[start:end]); a spared process is left alone with its
		// descendants. Not asked twice: an unresolved mark may resolve.
		j, end := start, len(buf)
		for c := n.child; c != nil; c = c.next {
			switch {
			case c.dead:
				walk(c)
			case j < end && buf[j].PID == c.PID && buf[j].Start == c.Start:
				j++
				walk(c)
			}
		}
	}
	walk(p)
	return buf
}

// Gone reports whether the table has applied the exit of every target (or
// of the agent p itself): after that, every fork by them is in the table
// too, because the kernel reports a process's forks before its exit.
func (t *Table) Gone(p *Proc, targets []Target) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, live := t.liveLocked(p, targets)
	return !live
}

// liveLocked returns the PID of p or of a target the table still holds
// alive, or false when Gone would report true.
func (t *Table) liveLocked(p *Proc, targets []Target) (int32, bool) {
	if !p.dead {
		return p.PID, true
	}
	for _, tg := range targets {
		if q := t.procs[tg.PID]; q != nil && q.Start.Same(tg.Start) {
			return tg.PID, true
		}
	}
	return 0, false
}

// WaitGone waits until the table has applied the exit of p and of every
// target (see Gone), or until deadline; it reports whether they are gone.
// It takes the table's lock only to look and to register (gone.go), never
// while it waits.
func (t *Table) WaitGone(deadline time.Time, p *Proc, targets []Target) bool {
	return t.gone.wait(&t.mu, deadline, func() (int32, bool) { return t.liveLocked(p, targets) })
}

// Release drops the reaper's hold on an agent's entry once it is done with
// it. A kill that failed has called Retry first: the entry of a process
// still alive then holds its retry, not the fired agent.
func (t *Table) Release(p *Proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.holds--
	if p.holds == 0 {
		unpend(p) // the reaper is done with p's tree
	}
	if p.holds == 0 && p.dead {
		t.freeLocked(p)
	}
}

// Retry queues again (retry.go), after the kill of a failed, the processes of its tree
// still alive (alive, as the reaper last saw them; a's own process among
// them if it survived): each one whose ancestors in the table are not
// queued too (their tree kill takes it) becomes a kill root, due
// RetryDelay(a.Attempt+1) from now (or when it was queued for already, if
// that comes first). A process that has exited, or whose PID a newer
// process holds, is not queued. Call it before Release. It returns the
// PIDs queued and when they are due.
func (t *Table) Retry(a *Agent, alive []Target) ([]int32, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kills.retryLocked(t.procs, a, alive)
}

// Stats is a snapshot of the table's size and counters.
type Stats struct {
	Processes int
	// Agents queued, neither leftovers nor retries of failed kills
	// (Deadlines.Retrying counts those).
	Agents int
	// Sessions and their live members; leftovers queued to be killed
	// (retried ones included).
	Sessions, SessionMembers, Leftovers int
	Counters
}

// Stats returns the current size and counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := Stats{Processes: len(t.procs), Counters: t.c, Sessions: len(t.sessions), SessionMembers: t.members}
	st.Agents, st.Leftovers, _ = t.cfg.Queue.counts()
	for i := range t.events {
		st.Events[i] = t.events[i].Load()
	}
	return st
}

// Lookup returns a copy of the entry for pid.
func (t *Table) Lookup(pid int32) (Proc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[pid]
	if p == nil {
		return Proc{}, false
	}
	c := *p
	c.parent, c.child, c.next, c.prev, c.agent = nil, nil, nil, nil, nil
	c.session, c.snext, c.sprev = nil, nil, nil
	return c, true
}
