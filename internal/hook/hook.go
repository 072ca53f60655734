package hook

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Event is one finished kill as a hook sees it.
type Event struct {
	PID        int32
	Comm       string
	Reason     string
	Outcome    string
	SessionPID int32  // 0: the process belonged to no session
	Record     []byte // the kill record, one JSON object, written to stdin
}

// Config bounds the runner; zero values take the defaults.
type Config struct {
	Concurrency int           // hooks running at once (default 4)
	QueueSize   int           // hooks waiting beyond those (default 256)
	Timeout     time.Duration // per run, then its process group is killed (default 10s)
	OutputLimit int           // bytes of a run's output kept for the log (default 4096)
	Shell       string        // default /bin/sh
	Log         *zap.Logger
}

// Defaults.
const (
	DefaultConcurrency = 4
	DefaultQueueSize   = 256
	DefaultTimeout     = 10 * time.Second
	DefaultOutputLimit = 4096
)

// Path is the only inherited-looking variable a hook gets: the daemon's
// environment is never passed on.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Stats are the runner's counters.
type Stats struct {
	Runs     uint64 // hooks finished (successfully or not)
	Failures uint64 // non-zero exit, killed by a signal, timed out, or not started
	Dropped  uint64 // never run: the queue was full, or the daemon stopped
	Running  int
	Queued   int
}

type job struct {
	cmd    string
	ev     Event
	queued time.Time
}

// Registry is told of every hook process. Under `supervisor init` the
// daemon is PID 1 (or a child subreaper) and reaps every child it has with
// waitid(2) (internal/initd); a hook's shell is one of them, but exec.Cmd
// must reap it itself (its exit status, and the zombie that keeps its
// process group id ours until then). Own runs start, which forks the child
// and returns its PID, such that the reaper cannot take the child before it
// is registered; Disown ends the registration once exec.Cmd has reaped it.
type Registry interface {
	Own(start func() (pid int, err error)) error
	Disown(pid int)
}

// Runner runs hooks in the background, bounded.
type Runner struct {
	cfg  Config
	log  *zap.Logger
	halt context.Context // done when Stop's bound has passed
	kill context.CancelFunc
	reg  Registry // guarded by mu

	mu      sync.Mutex
	queue   []job
	running int
	stopped bool
	stats   Stats
	wg      sync.WaitGroup
}

// New returns a runner; it starts no goroutine until the first Run.
func New(cfg Config) *Runner {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.QueueSize < 0 {
		cfg.QueueSize = 0
	} else if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = DefaultOutputLimit
	}
	if cfg.Shell == "" {
		cfg.Shell = "/bin/sh"
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	r := &Runner{cfg: cfg, log: cfg.Log}
	r.halt, r.kill = context.WithCancel(context.Background())
	return r
}

// Run queues cmd for ev and returns at once; false if it was dropped (the
// queue is full or the runner stopped). An empty cmd does nothing.
func (r *Runner) Run(cmd string, ev Event) bool {
	if cmd == "" {
		return true
	}
	j := job{cmd: cmd, ev: ev, queued: time.Now()}
	r.mu.Lock()
	switch {
	case r.stopped:
		r.stats.Dropped++
		r.mu.Unlock()
		r.log.Warn("hook dropped: shutting down", zap.Int32("pid", ev.PID))
		return false
	case r.running < r.cfg.Concurrency:
		r.running++
		r.wg.Add(1)
		r.mu.Unlock()
		go r.work(j)
		return true
	case len(r.queue) < r.cfg.QueueSize:
		r.queue = append(r.queue, j)
		r.mu.Unlock()
		return true
	}
	r.stats.Dropped++
	n := r.stats.Dropped
	r.mu.Unlock()
	r.log.Warn("hook dropped: queue full", zap.Int32("pid", ev.PID), zap.Int("queue", r.cfg.QueueSize),
		zap.Int("running", r.cfg.Concurrency), zap.Uint64("dropped_total", n))
	return false
}

// work runs j, then whatever is queued, until the queue is empty.
func (r *Runner) work(j job) {
	defer r.wg.Done()
	for {
		failed := r.exec(j)
		r.mu.Lock()
		r.stats.Runs++
		if failed {
			r.stats.Failures++
		}
		if r.stopped || len(r.queue) == 0 {
			r.running--
			r.mu.Unlock()
			return
		}
		j = r.queue[0]
		r.queue[0] = job{}
		r.queue = r.queue[1:]
		r.mu.Unlock()
	}
}

// Stop drops the queued hooks (counted), gives the running ones the rest
// of their timeout but at most bound, then kills their process groups and
// waits for them. Run drops everything after Stop.
func (r *Runner) Stop(bound time.Duration) {
	r.mu.Lock()
	r.stopped = true
	n, running := len(r.queue), r.running
	r.stats.Dropped += uint64(n)
	r.queue = nil
	r.mu.Unlock()
	if n > 0 || running > 0 {
		r.log.Info("stopping hooks", zap.Int("running", running), zap.Int("queued_dropped", n), zap.Duration("bound", bound))
	}
	t := time.AfterFunc(bound, r.kill)
	r.wg.Wait()
	t.Stop()
	r.kill()
}

// SetRegistry makes every hook process started from now on registered with
// reg (nil: none).
func (r *Runner) SetRegistry(reg Registry) {
	r.mu.Lock()
	r.reg = reg
	r.mu.Unlock()
}

// start starts c, registered with the registry if there is one.
func (r *Runner) start(c *exec.Cmd) (disown func(), err error) {
	r.mu.Lock()
	reg := r.reg
	r.mu.Unlock()
	if reg == nil {
		return func() {}, c.Start()
	}
	err = reg.Own(func() (int, error) {
		if err := c.Start(); err != nil {
			return 0, err
		}
		return c.Process.Pid, nil
	})
	if err != nil {
		return nil, err
	}
	pid := c.Process.Pid
	return func() { reg.Disown(pid) }, nil
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Running, s.Queued = r.running, len(r.queue)
	return s
}

// Env is a hook's whole environment.
func Env(ev Event) []string {
	session := ""
	if ev.SessionPID != 0 {
		session = strconv.Itoa(int(ev.SessionPID))
	}
	return []string{
		"PATH=" + Path,
		"REAPER_EVENT_PID=" + strconv.Itoa(int(ev.PID)),
		"REAPER_EVENT_COMM=" + ev.Comm,
		"REAPER_EVENT_REASON=" + ev.Reason,
		"REAPER_EVENT_OUTCOME=" + ev.Outcome,
		"REAPER_EVENT_SESSION_PID=" + session,
	}
}

// exec runs one hook to its end and logs it; true if it failed.
func (r *Runner) exec(j job) (failed bool) {
	out := &capped{max: r.cfg.OutputLimit}
	c := exec.Command(r.cfg.Shell, "-c", j.cmd)
	c.Dir = "/"
	c.Env = Env(j.ev)
	c.Stdin = bytes.NewReader(j.ev.Record)
	c.Stdout, c.Stderr = out, out // one writer: exec calls it from one goroutine at a time
	// Its own process group, so that the timeout reaches everything the
	// hook started (setpgid(2) in the child, before exec).
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A process that left the group (setsid) could hold our pipes open
	// for ever: Wait stops reading a second after the shell is gone.
	c.WaitDelay = time.Second
	fields := []zap.Field{zap.Int32("pid", j.ev.PID), zap.String("comm", j.ev.Comm),
		zap.String("reason", j.ev.Reason), zap.String("outcome", j.ev.Outcome)}
	if wait := time.Since(j.queued); wait > time.Millisecond {
		fields = append(fields, zap.Duration("queued_for", wait))
	}
	if err := closeOnExec(); err != nil {
		r.log.Warn("descriptors may leak into the hook", zap.Error(err))
	}
	start := time.Now()
	// The timeout counts from here, after the start time taken for "took":
	// a hook killed at its timeout has always run at least that long.
	ctx, cancel := context.WithTimeout(r.halt, r.cfg.Timeout)
	defer cancel()
	disown, err := r.start(c)
	if err != nil {
		r.log.Error("hook failed to start", append(fields, zap.Error(err))...)
		return true
	}
	defer disown() // after Wait has reaped it
	pgid := c.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- waitExited(pgid) }()
	timedOut, halted := false, false
	var werr error
	select {
	case werr = <-exited:
	case <-ctx.Done():
		halted = r.halt.Err() != nil
		timedOut = !halted
		if err := killGroup(pgid); err != nil {
			r.log.Error("hook timed out and could not be killed", append(fields, zap.Error(err))...)
		}
		werr = <-exited
	}
	if werr == nil {
		// The shell has exited but is not reaped: its group id is still
		// ours. Whatever it left running in the group goes with it.
		if err := killGroup(pgid); err != nil {
			r.log.Error("kill what the hook left behind", append(fields, zap.Error(err))...)
		}
	} else {
		// Not expected for our own child; keep the timeout through the
		// pidfd exec holds, which names this process whatever happens.
		r.log.Error("wait for hook", append(fields, zap.Error(werr))...)
		t := context.AfterFunc(ctx, func() { _ = c.Process.Kill() })
		defer t()
	}
	err = c.Wait()
	took := time.Since(start)
	fields = append(fields, zap.Duration("took", took), zap.Int("exit", c.ProcessState.ExitCode()),
		zap.String("status", c.ProcessState.String()), zap.String("output", out.String()))
	if out.cut > 0 {
		fields = append(fields, zap.Int("output_cut_bytes", out.cut))
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			fields = append(fields, zap.Error(err))
		}
	}
	switch {
	case timedOut:
		r.log.Warn("hook timed out: its process group was killed", append(fields, zap.Duration("timeout", r.cfg.Timeout))...)
		return true
	case halted:
		r.log.Warn("hook killed at shutdown", fields...)
		return true
	case !c.ProcessState.Success():
		r.log.Warn("hook failed", fields...)
		return true
	}
	r.log.Info("hook", fields...)
	return false
}

// capped keeps the first max bytes written to it and counts the rest,
// which it reads and discards so that the hook never blocks on a full pipe.
type capped struct {
	b   []byte
	max int
	cut int
}

func (w *capped) Write(p []byte) (int, error) {
	n := min(len(p), w.max-len(w.b))
	w.b = append(w.b, p[:n]...)
	w.cut += len(p) - n
	return len(p), nil
}

func (w *capped) String() string {
	return strings.TrimRight(string(w.b), "\n")
}
