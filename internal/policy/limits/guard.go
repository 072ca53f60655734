package limits

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Table is what the guard needs of the tracker; *tracker.Table is one.
type Table interface {
	// KillSession queues a whole session to be killed now.
	KillSession(id tracker.SessionID, why tracker.Reason, fig tracker.Figures) (tracker.LeaseResult, error)
	// SetProcsLimit sets the process limit the table checks at each fork.
	SetProcsLimit(n int)
	// SetKeepResolve bounds the command lines a sample may read to decide
	// --keep rules with :TEXT.
	SetKeepResolve(n int)
	// Lookup and Sessions name a dry-run row's command line and rule.
	Lookup(pid int32) (tracker.Proc, bool)
	Sessions() []tracker.SessionView
}

// Sampler takes the samples; *resource.Sampler is one.
type Sampler interface {
	// Sample reads every session's figures now, and how many reads failed
	// for another reason than a vanished process.
	Sample() ([]resource.Session, int)
	// Latest is the last sample (nil before the first).
	Latest() []resource.Session
}

// The daemon's parts are what the guard asks for.
var (
	_ Table   = (*tracker.Table)(nil)
	_ Sampler = (*resource.Sampler)(nil)
)

// Settings are what a reload may change.
type Settings struct {
	Limits   resource.Limits // --session-max-memory, --session-max-procs, --session-idle
	Interval time.Duration   // --resource-interval
}

// Config is what New needs.
type Config struct {
	Settings
	DryRun  bool // --dry-run: report each session and reason once, kill nothing
	Table   Table
	Sampler Sampler
	Now     func() int64 // CLOCK_BOOTTIME ns: the times of a dry-run row
	Log     *zap.Logger
	// Registerer takes supervisor_session_memory_bytes,
	// supervisor_resource_sample_cpu_seconds_total and
	// supervisor_resource_samples_total.
	Registerer prometheus.Registerer
	// OnDryRun records a dry-run kill row, as a dry run at max age gives.
	OnDryRun func(DryRunKill)
	// PressureArmed reports whether the pressure policy may kill by these
	// figures now (nil: never).
	PressureArmed func() bool
}

// Reasons are the kill reasons the guard gives (the metrics' series for
// them exist from the start).
var Reasons = []tracker.Reason{tracker.ReasonMemory, tracker.ReasonProcs, tracker.ReasonIdle}

// Guard samples every session each --resource-interval and kills a
// session that crosses a limit (--session-max-memory, --session-max-procs,
// --session-idle) at once, through the table's KillSession. In a dry run it
// reports each session and reason once instead.
type Guard struct {
	cfg   Config
	log   *zap.Logger
	reset chan time.Duration

	mu       sync.Mutex
	limits   resource.Limits
	interval time.Duration
	reported map[dryKey]bool // dry run: what was reported already
	lastWarn time.Time       // read errors, rate-limited
	// nothing: sessions over a limit with nothing to kill, when last
	// logged at Warn (once a minute each).
	nothing map[tracker.SessionID]time.Time

	// What sampling costs, measured on the sampling thread itself
	// (CLOCK_THREAD_CPUTIME_ID: its user and system time, the /proc reads
	// included): supervisor_resource_sample_cpu_seconds_total and
	// supervisor_resource_samples_total.
	sampleCPU prometheus.Counter
	samples   prometheus.Counter
}

type dryKey struct {
	id     tracker.SessionID
	reason tracker.Reason
}

// New builds the guard and registers its metrics; Run samples.
func New(cfg Config) *Guard {
	g := &Guard{cfg: cfg, log: cfg.Log, reset: make(chan time.Duration, 1),
		interval: cfg.Interval, reported: map[dryKey]bool{}, nothing: map[tracker.SessionID]time.Time{},
		limits: cfg.Limits}
	g.sampleCPU = prometheus.NewCounter(prometheus.CounterOpts{Name: "supervisor_resource_sample_cpu_seconds_total",
		Help: "CPU time (user and system) the resource sampler's thread spent taking samples."})
	g.samples = prometheus.NewCounter(prometheus.CounterOpts{Name: "supervisor_resource_samples_total",
		Help: "Resource samples taken (one per --resource-interval)."})
	cfg.Registerer.MustRegister(&sessionMemoryCollector{g: g}, g.sampleCPU, g.samples)
	return g
}

// Arm hands the table the process limit in force: from then on the table
// checks it at every fork. The daemon calls it after the start-up scan (the
// first sample judges what the scan found) and before it is ready, under
// its reload lock, so that no reload's limit is overwritten by an older one.
func (g *Guard) Arm() {
	g.mu.Lock()
	n := g.limits.MaxProcs
	g.mu.Unlock()
	g.cfg.Table.SetProcsLimit(n)
}

// Run samples until ctx ends.
func (g *Guard) Run(ctx context.Context) {
	// One OS thread for the loop, so that its CPU-time clock is the
	// sampling's cost (supervisor_resource_sample_cpu_seconds_total).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g.mu.Lock()
	iv := g.interval
	g.mu.Unlock()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		g.tick()
		select {
		case <-ctx.Done():
			return
		case iv := <-g.reset:
			t.Reset(iv)
		case <-t.C:
		}
	}
}

// tick takes one sample and acts on the limits.
func (g *Guard) tick() {
	g.mu.Lock()
	acting := g.limits.Any()
	g.mu.Unlock()
	if g.cfg.PressureArmed != nil {
		acting = acting || g.cfg.PressureArmed()
	}
	// Keep rules matter only when a policy may kill by these figures: then
	// up to keepResolve members' command lines may be read per sample to
	// decide one with :TEXT (tracker). Environments are never read here:
	// REAPER_KEEP=1 takes nothing out of the figures.
	if acting {
		g.cfg.Table.SetKeepResolve(keepResolve)
	} else {
		g.cfg.Table.SetKeepResolve(0)
	}
	t0, c0 := time.Now(), threadCPU()
	out, failed := g.cfg.Sampler.Sample()
	if c1 := threadCPU(); c1 >= c0 {
		g.sampleCPU.Add(float64(c1-c0) / 1e9)
	}
	g.samples.Inc()
	if failed > 0 {
		g.mu.Lock()
		warn := time.Since(g.lastWarn) > time.Minute
		if warn {
			g.lastWarn = time.Now()
		}
		g.mu.Unlock()
		if warn {
			g.log.Warn("resource sample: reads failed (not a vanished process)", zap.Int("failed", failed))
		}
	}
	g.log.Debug("resource sample", zap.Int("sessions", len(out)), zap.Duration("took", time.Since(t0)))
	g.mu.Lock()
	limits, dry := g.limits, g.cfg.DryRun
	g.mu.Unlock()
	if !limits.Any() {
		return
	}
	for i := range out {
		s := &out[i]
		if s.Killing {
			continue
		}
		crossed := limits.Check(s)
		if len(crossed) == 0 {
			continue
		}
		if dry {
			for _, c := range crossed {
				g.WouldKill(s, c)
			}
			continue
		}
		c := crossed[0]
		res, err := g.cfg.Table.KillSession(s.ID, c.Reason, c.Figures)
		fields := []zap.Field{zap.Int32("session_pid", s.ID.PID), zap.String("comm", s.Comm),
			zap.String("reason", string(c.Reason)), zap.Int64("memory_bytes", s.MemoryBytes), zap.Int("procs", s.Procs),
			zap.Float64("idle_seconds", s.IdleSeconds), zap.Float64("limit", c.Figures.Details["limit"])}
		switch {
		case errors.Is(err, tracker.ErrKilling), errors.Is(err, tracker.ErrExempt), errors.Is(err, tracker.ErrNoSession):
			g.log.Debug("session over a limit, not queued", append(fields, zap.Error(err))...)
		case err != nil:
			if g.warnNothing(s.ID) {
				g.log.Warn("session over a limit, nothing to kill", append(fields, zap.Error(err))...)
			} else {
				g.log.Debug("session over a limit, nothing to kill", append(fields, zap.Error(err))...)
			}
		default:
			g.log.Info("session over its limit: killing it", append(fields, zap.Int32s("queued", res.Queued))...)
		}
	}
	g.forget(out)
}

// Reload applies new limits and interval; it returns the names changed
// (for the reload's log line).
func (g *Guard) Reload(n Settings) []string {
	var changed []string
	g.mu.Lock()
	procs := n.Limits.MaxProcs != g.limits.MaxProcs
	if n.Limits != g.limits {
		g.limits = n.Limits
		changed = append(changed, "session-limits")
	}
	if n.Interval != g.interval {
		g.interval = n.Interval
		select {
		case g.reset <- n.Interval:
		default:
		}
		changed = append(changed, "resource-interval")
	}
	g.mu.Unlock()
	if procs {
		g.cfg.Table.SetProcsLimit(n.Limits.MaxProcs)
	}
	return changed
}
