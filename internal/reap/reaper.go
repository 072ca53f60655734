package reap

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Tree is what the reaper needs of the process table.
type Tree interface {
	Descendants(p *tracker.Proc, buf []tracker.Target) []tracker.Target
	// Gone reports whether the table has seen the exit of p and of every
	// target; a process's forks reach the table before its exit does.
	Gone(p *tracker.Proc, targets []tracker.Target) bool
	Release(p *tracker.Proc)
}

// Config configures a Reaper.
type Config struct {
	Grace  time.Duration
	DryRun bool
	Tree   Tree
	Procs  StatReader
	Clock  tracker.Clock
	Guard  *Guard
	Log    *zap.Logger
	// OnResult, if set, receives every finished reap.
	OnResult func(Result)
}

// Outcomes of a reap.
const (
	OutcomeTerminated = "terminated"   // the whole tree exited within the grace period
	OutcomeKilled     = "killed"       // SIGKILL was needed
	OutcomeGone       = "already_gone" // the agent had exited before its signal
	OutcomeDryRun     = "dry_run"      // nothing was signalled
	OutcomeFailed     = "failed"       // a process of the tree survived SIGKILL or could not be signalled
	OutcomeRefused    = "refused"      // the guard refused to signal the agent
)

// Result describes one reaped agent. Times are CLOCK_BOOTTIME ns.
type Result struct {
	PID         int32
	Comm        string
	Cmdline     string
	Rule        string
	Start       tracker.Start
	Deadline    int64
	Signalled   int64 // when the first signal went out (or would have)
	Exited      int64 // when the last process of the tree was seen gone; 0 if never
	FinalSignal string
	Outcome     string
	Descendants []int32
	DryRun      bool
}

// Lateness is how long after its deadline the agent was signalled.
func (r Result) Lateness() time.Duration { return time.Duration(r.Signalled - r.Deadline) }

// settleMax bounds the wait for the table to catch up with a tree's exits.
const settleMax = 2 * time.Second

// Reaper runs the kill protocol.
type Reaper struct {
	cfg   Config
	log   *zap.Logger
	wg    sync.WaitGroup
	grace atomic.Int64
}

// SetGrace changes the time between SIGTERM and SIGKILL for reaps that
// start from now on.
func (r *Reaper) SetGrace(d time.Duration) { r.grace.Store(int64(d)) }

// New returns a Reaper.
func New(cfg Config) *Reaper {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	r := &Reaper{cfg: cfg, log: cfg.Log}
	r.grace.Store(int64(cfg.Grace))
	return r
}

// Fire receives the agents now due from the Timer, which has already sent
// each its SIGCONT and SIGTERM (unless dry-run or refused), and hands each
// agent's tree to its own goroutine, so that agents due together are reaped
// together. Fire owns the agents and their pidfds.
func (r *Reaper) Fire(due []*tracker.Agent) {
	for _, a := range due {
		res := Result{PID: a.PID, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule, Start: a.Start,
			Deadline: a.Deadline, Signalled: a.Fired, DryRun: r.cfg.DryRun}
		switch {
		case !r.cfg.Guard.Allowed(a.PID, false):
			res.Outcome = OutcomeRefused
		case r.cfg.DryRun || a.FD < 0:
			res.Outcome = OutcomeDryRun
		case errors.Is(a.FireErr, tracker.ErrGone):
			res.Outcome, res.FinalSignal = OutcomeGone, "TERM"
		case a.FireErr != nil:
			res.Outcome, res.FinalSignal = OutcomeFailed, "TERM"
		default:
			res.FinalSignal = "TERM"
		}
		r.wg.Add(1)
		go r.finish(a, res)
	}
}

// Wait blocks until every reap in flight has finished.
func (r *Reaper) Wait() { r.wg.Wait() }

type member struct {
	tracker.Target
	fd   int
	dead bool
}

// finish terminates the agent's descendants, waits out the grace period and
// kills what is left.
func (r *Reaper) finish(a *tracker.Agent, res Result) {
	defer r.wg.Done()
	defer r.cfg.Tree.Release(a.Proc())
	defer closeFD(a.FD)

	if err := a.FireErr; err != nil && !errors.Is(err, tracker.ErrGone) {
		r.log.Error("signal agent", zap.Int32("pid", a.PID), zap.String("comm", a.Comm), zap.Error(err))
	}
	if res.Outcome == OutcomeRefused {
		r.log.Error("refused to signal a protected process", zap.Int32("pid", a.PID), zap.String("comm", a.Comm))
		r.report(res)
		return
	}
	self := member{Target: tracker.Target{PID: a.PID, Start: a.Start, Comm: a.Comm}, fd: a.FD, dead: res.Outcome == OutcomeGone}
	tree := []*member{&self}
	known := map[int32]*member{a.PID: &self}
	var buf []tracker.Target

	// sweep adds descendants not seen before and sends them sig (with a
	// SIGCONT first, so a stopped process can act on SIGTERM).
	sweep := func(sig unix.Signal) int {
		buf = r.cfg.Tree.Descendants(a.Proc(), buf[:0])
		added := 0
		for _, t := range buf {
			if m, ok := known[t.PID]; ok && m.Start.Same(t.Start) {
				continue
			}
			m := &member{Target: t, fd: -1}
			known[t.PID] = m
			tree = append(tree, m)
			added++
			if res.DryRun {
				continue
			}
			if !r.cfg.Guard.Allowed(t.PID, t.Kthread) {
				r.log.Error("refused to signal a protected process", zap.Int32("pid", t.PID), zap.String("comm", t.Comm),
					zap.Int32("agent", a.PID))
				m.dead = true
				continue
			}
			fd, err := pin(r.cfg.Procs, t.PID, t.Start)
			if err != nil {
				m.dead = true // gone or reused: nothing of ours to signal
				continue
			}
			m.fd = fd
			if sig != unix.SIGKILL {
				_ = signal(fd, unix.SIGCONT)
			}
			if signal(fd, sig) != nil {
				m.dead = true
			}
		}
		return added
	}
	defer func() {
		for _, m := range tree[1:] {
			closeFD(m.fd)
		}
	}()

	if res.DryRun {
		sweep(0)
		res.Descendants = pids(tree[1:])
		r.report(res)
		return
	}

	// settle waits until the table has applied the exit of every process
	// of the tree, so that a child forked just before its parent died is
	// in the table for the next sweep. The event loop may lag the kernel
	// (about a second under a fork storm); past settleMax the sweep goes on
	// with what the table has.
	settle := func() {
		targets := make([]tracker.Target, 0, len(tree))
		for _, m := range tree[1:] {
			targets = append(targets, m.Target)
		}
		end := time.Now().Add(settleMax)
		for !r.cfg.Tree.Gone(a.Proc(), targets) && time.Now().Before(end) {
			time.Sleep(2 * time.Millisecond)
		}
	}

	sweep(unix.SIGTERM)
	grace := time.Duration(r.grace.Load())
	end := time.Now().Add(grace)
	for {
		if r.wait(tree, time.Until(end), 50*time.Millisecond) {
			settle()
			if sweep(unix.SIGTERM) == 0 && r.allDead(tree) {
				break
			}
		}
		if !time.Now().Before(end) {
			break
		}
		sweep(unix.SIGTERM)
	}

	if !r.allDead(tree) {
		res.FinalSignal = "KILL"
		res.Outcome = OutcomeKilled
		// Parents first: a killed parent forks no more. Then sweep again
		// for anything forked before it died, until a sweep finds none.
		for round := 0; round < 50; round++ {
			for _, m := range tree {
				if !m.dead && m.fd >= 0 && signal(m.fd, unix.SIGKILL) != nil {
					m.dead = true
				}
			}
			added := sweep(unix.SIGKILL)
			if r.wait(tree, 2*time.Second, 2*time.Second) {
				settle()
				added += sweep(unix.SIGKILL)
			}
			if added == 0 && r.allDead(tree) {
				break
			}
		}
		if !r.allDead(tree) {
			res.Outcome = OutcomeFailed
		}
	} else if res.Outcome == "" {
		res.Outcome = OutcomeTerminated
	}
	if r.allDead(tree) {
		res.Exited = r.cfg.Clock.Now()
	}
	res.Descendants = pids(tree[1:])
	r.report(res)
}

// wait polls the tree's pidfds until all are dead or d passes, returning
// whether all are dead. It wakes at least every step to let sweeps run.
func (r *Reaper) wait(tree []*member, d, step time.Duration) bool {
	fds := make([]int, len(tree))
	dead := make([]bool, len(tree))
	end := time.Now().Add(d)
	for {
		for i, m := range tree {
			fds[i], dead[i] = m.fd, m.dead || m.fd < 0
		}
		exited(fds, dead, min(step, max(0, time.Until(end))))
		for i, m := range tree {
			if dead[i] {
				m.dead = true
			}
		}
		if r.allDead(tree) {
			return true
		}
		if !time.Now().Before(end) || step < d {
			return false
		}
	}
}

func (r *Reaper) allDead(tree []*member) bool {
	for _, m := range tree {
		if !m.dead && m.fd >= 0 {
			return false
		}
	}
	return true
}

func pids(ms []*member) []int32 {
	out := make([]int32, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.PID)
	}
	return out
}

func (r *Reaper) report(res Result) {
	now := r.cfg.Clock.Now()
	age := time.Duration(res.Signalled - res.Start.NS)
	fields := []zap.Field{
		zap.Int32("pid", res.PID),
		zap.String("comm", res.Comm),
		zap.String("rule", res.Rule),
		zap.Duration("age", age),
		zap.Time("deadline", tracker.Time(res.Deadline, now)),
		zap.Time("signalled_at", tracker.Time(res.Signalled, now)),
		zap.Duration("lateness", res.Lateness()),
		zap.Int64("lateness_ns", int64(res.Lateness())),
		zap.Int64("deadline_boot_ns", res.Deadline),
		zap.Int64("signalled_boot_ns", res.Signalled),
		zap.Int64("start_boot_ns", res.Start.NS),
		zap.Bool("start_exact", res.Start.Exact),
		zap.String("outcome", res.Outcome),
		zap.String("final_signal", res.FinalSignal),
		zap.Int32s("descendants", res.Descendants),
		zap.Bool("dry_run", res.DryRun),
	}
	// Recorded (spool, metrics) before the log line, so whoever sees the
	// line can find the record.
	if r.cfg.OnResult != nil {
		r.cfg.OnResult(res)
	}
	if res.DryRun {
		r.log.Info("would kill", fields...)
	} else {
		r.log.Info("kill", fields...)
	}
}
