package reap

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Tree is what the reaper needs of the process table.
type Tree interface {
	// Descendants lists p's live descendants to signal; why p is killed
	// decides whether kept processes are left out (all but manual kills).
	Descendants(p *tracker.Proc, why tracker.Reason, buf []tracker.Target) []tracker.Target
	// WaitGone waits until the table has seen the exit of p and of every
	// target, or until deadline, and reports whether it has; a process's
	// forks reach the table before its exit does.
	WaitGone(deadline time.Time, p *tracker.Proc, targets []tracker.Target) bool
	// Retry queues again the processes of a's tree still alive after its
	// kill failed (tracker/retry.go) and returns the PIDs queued and when
	// they are due (boottime); called before Release.
	Retry(a *tracker.Agent, alive []tracker.Target) ([]int32, int64)
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
	// Pins opens the pidfds (nil: a Pins of its own, from Procs). Share
	// the table's, so that Stats counts both.
	Pins *Pins
	// OnSignal, if set, receives each agent right after its first signal
	// went out (Outcome "pending", FinalSignal "TERM"), before its tree is
	// chased: not for a dry run, a refused agent or one whose first signal
	// failed. OnResult follows with the same Seq.
	OnSignal func(Result)
	// OnResult, if set, receives every finished reap.
	OnResult func(Result)
	// NoRetry: a failed kill is not queued again (`supervisor once`, which
	// exits once its kills are over).
	NoRetry bool
}

// Outcomes of a reap.
const (
	OutcomePending    = "pending"      // signalled, the tree not gone yet (OnSignal)
	OutcomeTerminated = "terminated"   // the whole tree exited within the grace period
	OutcomeKilled     = "killed"       // SIGKILL was needed
	OutcomeGone       = "already_gone" // the agent had exited before its signal
	OutcomeDryRun     = "dry_run"      // nothing was signalled
	OutcomeFailed     = "failed"       // a process of the tree survived SIGKILL or could not be signalled (EPERM); what lives is retried
	OutcomeRefused    = "refused"      // the guard refused to signal the agent
)

// Result describes one reaped agent. Times are CLOCK_BOOTTIME ns.
type Result struct {
	Seq         uint64 // the agent's, unique per daemon run: pairs OnSignal with OnResult
	PID         int32
	Comm        string
	Cmdline     string
	Rule        string
	Reason      tracker.Reason    // why: max_age, leftover, ...
	Session     tracker.SessionID // the session the process belonged to, if any
	RequestedBy string            // who asked for a manual kill ("uid 0 pid 1234"); empty otherwise
	Figures     tracker.Figures   // the session's resource figures at the decision (resource policies)
	Start       tracker.Start
	// Deadline is when the process was due: for a retry too, its first
	// kill's deadline, so that Lateness says how late it really is.
	Deadline    int64
	Signalled   int64 // when the first signal went out (or would have)
	Exited      int64 // when the last process of the tree was seen gone; 0 if never
	FinalSignal string
	Outcome     string
	Descendants []int32
	DryRun      bool
	Cgroup      cgroupinfo.Info // where the process ran, as read when it was queued
	// Attempt is 0 for a first kill, n for the n-th retry of a failed one
	// (tracker/retry.go).
	Attempt int
	// Retried lists the processes queued again after this attempt failed,
	// due at RetryAt (boottime); empty when nothing is retried.
	Retried []int32
	RetryAt int64
}

// Lateness is how long after its deadline the agent was signalled.
func (r Result) Lateness() time.Duration { return time.Duration(r.Signalled - r.Deadline) }

const (
	// settleMax bounds the wait for the table to catch up with a tree's
	// exits.
	settleMax = 2 * time.Second
	// killMax bounds the SIGKILL rounds: a process that survives them (in
	// uninterruptible sleep) makes the outcome failed, and Wait returns.
	killMax = 10 * time.Second
	// pinMax bounds the retries of a pidfd that cannot be opened (EMFILE,
	// ENOMEM, over budget) before the process counts as failed.
	pinMax = 30 * time.Second
	// sweepers bounds the sweeps running at once. A sweep is a handful of
	// short syscalls (pidfd_open, a /proc read, pidfd_send_signal), but
	// thousands at once would each take an OS thread from the Go runtime
	// while in the kernel.
	sweepers = 8
)

// Reaper runs the kill protocol.
//
// Every agent's kill is a goroutine that blocks in nothing but channels and
// Go timers: exits come from the one epoll loop (exitWatch), the table's
// catching up from Tree.WaitGone, the grace period from a Go timer, and the
// syscalls of a sweep run a few at a time (sweepers). So any number of
// kills in flight costs goroutines, not threads.
type Reaper struct {
	cfg      Config
	log      *zap.Logger
	pins     *Pins
	wg       sync.WaitGroup
	grace    atomic.Int64
	sem      chan struct{}
	inflight atomic.Int64
	sigErrs  atomic.Uint64
	send     func(fd int, sig unix.Signal) error // signal; a seam for tests
}

// Stats are the reaper's counts.
type Stats struct {
	InFlight int64 // kills in flight
	PinStats       // of its Pins
	// SignalErrors counts signals refused (EPERM) or failed for another
	// reason than a vanished process.
	SignalErrors uint64
}

// Stats returns the counts so far.
func (r *Reaper) Stats() Stats {
	return Stats{InFlight: r.inflight.Load(), PinStats: r.pins.Stats(), SignalErrors: r.sigErrs.Load()}
}

// NoRetry turns retries of failed kills off; call it before the first Fire.
func (r *Reaper) NoRetry() { r.cfg.NoRetry = true }

// SetGrace changes the time between SIGTERM and SIGKILL for reaps that
// start from now on.
func (r *Reaper) SetGrace(d time.Duration) { r.grace.Store(int64(d)) }

// New returns a Reaper.
func New(cfg Config) *Reaper {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Pins == nil {
		cfg.Pins = NewPins(cfg.Procs, cfg.Log)
	}
	r := &Reaper{cfg: cfg, log: cfg.Log, pins: cfg.Pins, sem: make(chan struct{}, sweepers), send: signal}
	r.grace.Store(int64(cfg.Grace))
	return r
}

// Fire receives the agents now due from the Timer, which has already sent
// each its SIGCONT and SIGTERM (unless dry-run, refused, or the agent has
// no pidfd yet), and hands each agent's tree to its own goroutine, so that
// agents due together are reaped together. Fire owns the agents and their
// pidfds.
func (r *Reaper) Fire(due []*tracker.Agent) {
	for _, a := range due {
		res := Result{Seq: a.Seq, PID: a.PID, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule, Reason: a.Reason, Session: a.Session, Start: a.Start, RequestedBy: a.RequestedBy, Figures: a.Figures,
			Deadline: a.Deadline, Signalled: a.Fired, DryRun: r.cfg.DryRun, Cgroup: a.Cgroup, Attempt: a.Attempt}
		if a.Attempt > 0 && a.FirstDeadline != 0 {
			res.Deadline = a.FirstDeadline
		}
		switch {
		case !r.cfg.Guard.Allowed(a.PID, false):
			res.Outcome = OutcomeRefused
		case r.cfg.DryRun:
			res.Outcome = OutcomeDryRun
		}
		r.wg.Add(1)
		r.inflight.Add(1)
		go r.finish(a, res)
	}
}

// Wait blocks until every reap in flight has finished: within the grace
// period plus killMax (plus pinMax for an agent whose pidfd cannot be
// opened) of the last Fire.
func (r *Reaper) Wait() { r.wg.Wait() }

// member is one process of a tree being reaped. Exactly one of: its pidfd
// is being retried (fd < 0, pinning set), it is pinned (fd >= 0) until it
// exits, or it is dead, failed or ignored.
type member struct {
	tracker.Target
	fd      int
	watch   uint64      // exitWatch id; 0: poll fd instead
	exited  atomic.Bool // set by the exit watcher
	pinning time.Time   // when the first pin attempt failed
	dead    bool        // exited, or gone or reused before we could pin it
	failed  bool        // could not be signalled (EPERM) or pinned in pinMax
	ignored bool        // protected: never signalled
}

func (m *member) done() bool { return m.dead || m.failed || m.ignored }

// kill is one agent's reap in flight.
type kill struct {
	r     *Reaper
	a     *tracker.Agent
	res   Result
	tree  []*member
	known map[int32]*member
	buf   []tracker.Target
	wake  chan struct{} // a watched member exited
	err   error         // the first refusal, for the retry's warning
}

func (r *Reaper) finish(a *tracker.Agent, res Result) {
	defer r.wg.Done()
	defer r.inflight.Add(-1)
	defer r.cfg.Tree.Release(a.Proc())

	k := &kill{r: r, a: a, res: res, known: map[int32]*member{}, wake: make(chan struct{}, 1)}
	self := &member{Target: tracker.Target{PID: a.PID, Start: a.Start, Comm: a.Comm}, fd: a.FD}
	k.tree = append(k.tree, self)
	k.known[a.PID] = self
	defer func() {
		for _, m := range k.tree {
			exits.remove(m.watch)
			closeFD(m.fd)
		}
	}()

	switch res.Outcome {
	case OutcomeRefused:
		r.log.Error("refused to signal a protected process", zap.Int32("pid", a.PID), zap.String("comm", a.Comm))
		r.report(k.res)
		return
	case OutcomeDryRun:
		k.sweep(0)
		k.res.Descendants = pids(k.tree[1:])
		r.report(k.res)
		return
	}

	k.res.FinalSignal = "TERM"
	fireErr := a.FireErr
	if self.fd < 0 {
		// Queued without a pidfd (over the descriptor budget when found):
		// pin it now, checking its start time, and send the first signals
		// from here, as late as the pin took; Signalled says so.
		fireErr = k.pinFirst(self)
	}
	switch {
	case fireErr == nil:
		k.watch(self)
		if r.cfg.OnSignal != nil {
			p := k.res
			p.Outcome = OutcomePending
			r.cfg.OnSignal(p)
		}
	case errors.Is(fireErr, tracker.ErrGone):
		self.dead = true
		k.res.Outcome = OutcomeGone
	default:
		k.refused(self, fireErr)
	}

	if !k.phase(unix.SIGTERM, time.Duration(r.grace.Load())) {
		k.res.FinalSignal = "KILL"
		k.res.Outcome = OutcomeKilled
		// Parents first: a killed parent forks no more. Then sweep again
		// for anything forked before it died, until a sweep finds none.
		end := time.Now().Add(killMax)
		for {
			k.signalAll(unix.SIGKILL)
			left := time.Until(end)
			if k.phase(unix.SIGKILL, min(2*time.Second, max(0, left))) || left <= 0 {
				break
			}
		}
	} else if k.res.Outcome == "" {
		k.res.Outcome = OutcomeTerminated
	}
	all, failed := k.refresh(), false
	for _, m := range k.tree {
		failed = failed || m.failed
	}
	if !all || failed {
		k.res.Outcome = OutcomeFailed
		k.retry()
	} else {
		k.res.Exited = r.cfg.Clock.Now()
	}
	k.res.Descendants = pids(k.tree[1:])
	r.report(k.res)
	if len(k.res.Retried) > 0 {
		k.warnRetry()
	}
}

// retry queues again every process of the failed tree that may still be
// alive: not seen exit, not protected. One the guard refused is never
// retried, nor is anything in a dry run (which fails nothing).
func (k *kill) retry() {
	if k.r.cfg.NoRetry || k.res.DryRun {
		return
	}
	var alive []tracker.Target
	for _, m := range k.tree {
		if !m.dead && !m.ignored {
			alive = append(alive, m.Target)
		}
	}
	if len(alive) > 0 {
		k.res.Retried, k.res.RetryAt = k.r.cfg.Tree.Retry(k.a, alive)
	}
}

// warnRetry logs, once per attempt, that a kill failed and when it is
// tried again.
func (k *kill) warnRetry() {
	r := k.r
	now := r.cfg.Clock.Now()
	fields := []zap.Field{
		zap.Int32("pid", k.res.PID), zap.String("comm", k.res.Comm), zap.String("reason", string(k.res.Reason)),
		zap.Int("attempt", k.res.Attempt), zap.Int("next_attempt", k.res.Attempt+1),
		zap.Int32s("retry_pids", k.res.Retried), zap.Duration("retry_in", time.Duration(k.res.RetryAt-now)),
		zap.Time("retry_at", tracker.Time(k.res.RetryAt, now)), zap.Int64("retry_boot_ns", k.res.RetryAt),
	}
	if k.err != nil {
		fields = append(fields, zap.Error(k.err))
	}
	if k.res.Session.PID != 0 {
		fields = append(fields, zap.Int32("session_pid", k.res.Session.PID))
	}
	r.log.Warn("kill failed: retrying", fields...)
}

// pinFirst pins an agent that was queued without a pidfd and sends it
// SIGCONT and SIGTERM, retrying a failed open (EMFILE, over budget) with
// backoff for up to pinMax. It returns the error of SIGTERM (ErrGone if
// the agent is gone or its PID reused).
func (k *kill) pinFirst(self *member) error {
	r := k.r
	backoff := 10 * time.Millisecond
	for start := time.Now(); ; {
		r.sem <- struct{}{}
		fd, err := r.pins.pin(self.PID, self.Start, r.pins.fireCap)
		if err == nil {
			self.fd = fd
			_ = r.send(fd, unix.SIGCONT)
			err = r.send(fd, unix.SIGTERM)
		}
		<-r.sem
		switch {
		case self.fd >= 0 || errors.Is(err, tracker.ErrGone):
			k.res.Signalled = r.cfg.Clock.Now()
			return err
		case time.Since(start) > pinMax:
			k.res.Signalled = r.cfg.Clock.Now()
			return fmt.Errorf("no pidfd for %s: %w", pinMax, err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// watch asks the exit watcher to wake this kill when m exits.
func (k *kill) watch(m *member) {
	id, err := exits.add(m.fd, func() {
		m.exited.Store(true)
		select {
		case k.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		k.r.log.Debug("watch pidfd; polling it instead", zap.Int32("pid", m.PID), zap.Error(err))
	}
	m.watch = id
}

// refused records that m could not be signalled: the outcome is failed,
// never killed, since the process was not.
func (k *kill) refused(m *member, err error) {
	m.failed = true
	k.r.sigErrs.Add(1)
	if k.err == nil {
		k.err = err
	}
	lvl := zap.ErrorLevel
	if k.a.Attempt > 0 {
		lvl = zap.DebugLevel // a retry: its warning says so, once per attempt
	}
	k.r.log.Log(lvl, "cannot signal a process of the tree", zap.Int32("pid", m.PID), zap.String("comm", m.Comm),
		zap.Int32("agent", k.a.PID), zap.Int("attempt", k.a.Attempt), zap.Error(err))
}

// send sends sig to m (SIGCONT first unless SIGKILL, so that a stopped
// process can act on it).
func (k *kill) send(m *member, sig unix.Signal) {
	if sig != unix.SIGKILL {
		_ = k.r.send(m.fd, unix.SIGCONT)
	}
	switch err := k.r.send(m.fd, sig); {
	case err == nil:
	case errors.Is(err, tracker.ErrGone):
		m.dead = true
	default:
		k.refused(m, err)
	}
}

// signalAll sends sig to every pinned member still alive, parents first.
func (k *kill) signalAll(sig unix.Signal) {
	k.r.sem <- struct{}{}
	defer func() { <-k.r.sem }()
	k.refresh()
	for _, m := range k.tree {
		if !m.done() && m.fd >= 0 {
			k.send(m, sig)
		}
	}
}

// sweep adds the descendants not seen before, pins them and sends them sig
// (none when 0), and retries pins that failed before. It returns how many
// processes it added.
func (k *kill) sweep(sig unix.Signal) int {
	r := k.r
	r.sem <- struct{}{}
	defer func() { <-r.sem }()
	k.buf = r.cfg.Tree.Descendants(k.a.Proc(), k.res.Reason, k.buf[:0])
	added := 0
	for _, t := range k.buf {
		if m, ok := k.known[t.PID]; ok && m.Start.Same(t.Start) {
			continue
		}
		m := &member{Target: t, fd: -1}
		k.known[t.PID] = m
		k.tree = append(k.tree, m)
		added++
		switch {
		case k.res.DryRun:
			m.ignored = true
		case !r.cfg.Guard.Allowed(t.PID, t.Kthread):
			r.log.Error("refused to signal a protected process", zap.Int32("pid", t.PID), zap.String("comm", t.Comm),
				zap.Int32("agent", k.a.PID))
			m.ignored = true
		}
	}
	for _, m := range k.tree[1:] {
		if m.fd >= 0 || m.done() {
			continue
		}
		fd, err := r.pins.pin(m.PID, m.Start, r.pins.fireCap)
		switch {
		case err == nil:
			m.fd, m.pinning = fd, time.Time{}
			k.watch(m)
			k.send(m, sig)
		case errors.Is(err, tracker.ErrGone):
			m.dead = true // gone or reused: nothing of ours to signal
		case m.pinning.IsZero():
			m.pinning = time.Now() // EMFILE, ENOMEM, over budget: next sweep
		case time.Since(m.pinning) > pinMax:
			k.refused(m, fmt.Errorf("no pidfd for %s: %w", pinMax, err))
		}
	}
	return added
}

// refresh marks exited members dead and reports whether every member is
// done with.
func (k *kill) refresh() bool {
	all := true
	for _, m := range k.tree {
		if m.done() {
			continue
		}
		if m.fd >= 0 && (m.exited.Load() || (m.watch == 0 && hasExited(m.fd))) {
			m.dead = true
			continue
		}
		all = false
	}
	return all
}

// settle waits until the table has applied the exit of every process of
// the tree, so that a child forked just before its parent died is in the
// table for the next sweep. The event loop may lag the kernel (about a
// second under a fork storm); past settleMax the sweep goes on with what
// the table has.
func (k *kill) settle() {
	if !k.tree[0].dead {
		return // the agent survives (EPERM): the table will not see its exit
	}
	targets := make([]tracker.Target, 0, len(k.tree))
	for _, m := range k.tree[1:] {
		if m.dead {
			targets = append(targets, m.Target)
		}
	}
	k.r.cfg.Tree.WaitGone(time.Now().Add(settleMax), k.a.Proc(), targets)
}

// step is how often a kill in flight sweeps for new descendants while it
// waits: 50 ms, longer when thousands are in flight, so that their sweeps
// (each takes the table's lock) leave the event loop room.
func (r *Reaper) step() time.Duration {
	return min(max(50*time.Millisecond, time.Duration(r.inflight.Load())*time.Millisecond), time.Second)
}

// phase waits up to d for every member to be done, sweeping with sig
// meanwhile; once they are, it waits for the table to catch up and sweeps
// once more. It reports whether the tree is done with.
func (k *kill) phase(sig unix.Signal, d time.Duration) bool {
	k.sweep(sig)
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(k.r.step())
	defer tick.Stop()
	for {
		if k.refresh() {
			k.settle()
			if k.sweep(sig) == 0 && k.refresh() {
				return true
			}
		}
		select {
		case <-k.wake:
		case <-tick.C:
			k.sweep(sig)
		case <-end.C:
			return k.refresh()
		}
	}
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
		zap.String("reason", string(res.Reason)),
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
	if res.Session.PID != 0 {
		fields = append(fields, zap.Int32("session_pid", res.Session.PID), zap.Int64("session_start_boot_ns", res.Session.Start.NS))
	}
	if res.RequestedBy != "" {
		fields = append(fields, zap.String("requested_by", res.RequestedBy))
	}
	if res.Attempt > 0 {
		fields = append(fields, zap.Int("attempt", res.Attempt))
	}
	if len(res.Retried) > 0 {
		fields = append(fields, zap.Int32s("retry_pids", res.Retried), zap.Int64("retry_boot_ns", res.RetryAt))
	}
	fields = appendCgroup(fields, res.Cgroup)
	if f := res.Figures; f.Known() {
		fields = append(fields, zap.Int64("memory_bytes", f.MemoryBytes), zap.Int("procs", f.Procs), zap.Any("details", f.Details))
	}
	switch {
	case res.DryRun && res.Reason == tracker.ReasonLeftover:
		r.log.Info("would kill leftover", fields...)
	case res.DryRun:
		r.log.Info("would kill", fields...)
	default:
		r.log.Info("kill", fields...)
	}
}

// appendCgroup adds the attribution that is known: cgroup, container_id,
// pod_uid.
func appendCgroup(fields []zap.Field, c cgroupinfo.Info) []zap.Field {
	if c.Path != "" {
		fields = append(fields, zap.String("cgroup", c.Path))
	}
	if c.ContainerID != "" {
		fields = append(fields, zap.String("container_id", c.ContainerID))
	}
	if c.PodUID != "" {
		fields = append(fields, zap.String("pod_uid", c.PodUID))
	}
	return fields
}
