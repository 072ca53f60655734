package daemon

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// resourceGuard samples every session each --resource-interval and kills
// a session that crosses a limit (--session-max-memory, --session-max-procs,
// --session-idle) at once, through the table's KillSession. In a dry run it
// reports each session and reason once instead.
type resourceGuard struct {
	d       *daemon
	log     *zap.Logger
	sampler *resource.Sampler
	reset   chan time.Duration

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

// startResources builds the guard and runs its loop until ctx ends.
func (d *daemon) startResources(ctx context.Context) <-chan struct{} {
	g := d.resources()
	return spawn(func() { g.run(ctx) })
}

// resources returns the daemon's guard, built on first use (`run` starts
// it; the HTTP handlers and snapshots read its latest sample).
func (d *daemon) resources() *resourceGuard {
	d.resOnce.Do(func() {
		cfg := d.cfg
		g := &resourceGuard{d: d, log: d.log.Named("resource"), reset: make(chan time.Duration, 1),
			interval: cfg.ResourceInterval, reported: map[dryKey]bool{}, nothing: map[tracker.SessionID]time.Time{},
			limits: resource.Limits{MaxMemory: cfg.SessionMaxMemory, MaxProcs: cfg.SessionMaxProcs, Idle: cfg.SessionIdle}}
		g.sampler = resource.NewSampler(d.table, resource.NewProcReader("/proc"), d.clock)
		d.table.SetProcsLimit(cfg.SessionMaxProcs)
		g.sampleCPU = prometheus.NewCounter(prometheus.CounterOpts{Name: "supervisor_resource_sample_cpu_seconds_total",
			Help: "CPU time (user and system) the resource sampler's thread spent taking samples."})
		g.samples = prometheus.NewCounter(prometheus.CounterOpts{Name: "supervisor_resource_samples_total",
			Help: "Resource samples taken (one per --resource-interval)."})
		d.metrics.Register(&sessionMemoryCollector{g: g}, g.sampleCPU, g.samples)
		d.metrics.KillReasons(tracker.ReasonMemory, tracker.ReasonProcs, tracker.ReasonIdle)
		d.res = g
	})
	return d.res
}

// latestResources is the last sample (nil before the first).
func (d *daemon) latestResources() []resource.Session {
	return d.resources().sampler.Latest()
}

func (g *resourceGuard) run(ctx context.Context) {
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
func (g *resourceGuard) tick() {
	g.mu.Lock()
	acting := g.limits.Any()
	g.mu.Unlock()
	if w := g.d.pressure; w != nil {
		w.mu.Lock()
		acting = acting || w.spec != nil
		w.mu.Unlock()
	}
	// Keep rules matter only when a policy may kill by these figures: then
	// up to keepResolve members' command lines may be read per sample to
	// decide one with :TEXT (tracker). Environments are never read here:
	// REAPER_KEEP=1 takes nothing out of the figures.
	if acting {
		g.d.table.SetKeepResolve(keepResolve)
	} else {
		g.d.table.SetKeepResolve(0)
	}
	t0, c0 := time.Now(), threadCPU()
	out, failed := g.sampler.Sample()
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
	limits, dry := g.limits, g.d.cfg.DryRun
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
				g.wouldKill(s, c)
			}
			continue
		}
		c := crossed[0]
		res, err := g.d.table.KillSession(s.ID, c.Reason, c.Figures)
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

// wouldKill reports, once per session and reason, what a limit would kill
// in a dry run: a log line and a dry-run kill row, as a dry run at max age
// gives.
func (g *resourceGuard) wouldKill(s *resource.Session, c resource.Crossing) {
	k := dryKey{s.ID, c.Reason}
	g.mu.Lock()
	done := g.reported[k]
	g.reported[k] = true
	g.mu.Unlock()
	if done {
		return
	}
	now := g.d.clock.Now()
	r := reap.Result{PID: s.ID.PID, Comm: s.Comm, Reason: c.Reason, Session: s.ID, Start: s.ID.Start,
		Deadline: now, Signalled: now, Outcome: reap.OutcomeDryRun, DryRun: true, Figures: c.Figures,
		Descendants: []int32{}}
	if p, ok := g.d.table.Lookup(s.ID.PID); ok && p.Start.Same(s.ID.Start) {
		r.Cmdline = p.Cmdline
	}
	for _, v := range g.d.table.Sessions() {
		if v.ID == s.ID {
			r.Rule = v.Rule
		}
	}
	g.d.rec.onResult(r)
	g.log.Info("would kill session", zap.Int32("session_pid", s.ID.PID), zap.String("comm", s.Comm),
		zap.String("reason", string(c.Reason)), zap.Int64("memory_bytes", s.MemoryBytes), zap.Int("procs", s.Procs),
		zap.Float64("idle_seconds", s.IdleSeconds), zap.Float64("limit", c.Figures.Details["limit"]), zap.Bool("dry_run", true))
}

// warnNothing reports whether "nothing to kill" for session id is due at
// Warn: once a minute per session (the members that are left may all have
// been pinned in vain, at every sample).
func (g *resourceGuard) warnNothing(id tracker.SessionID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := g.nothing[id]; ok && time.Since(last) < time.Minute {
		return false
	}
	g.nothing[id] = time.Now()
	return true
}

// forget drops the dry-run reports and warnings of sessions that ended.
func (g *resourceGuard) forget(out []resource.Session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.reported) == 0 && len(g.nothing) == 0 {
		return
	}
	live := make(map[tracker.SessionID]bool, len(out))
	for i := range out {
		live[out[i].ID] = true
	}
	for k := range g.reported {
		if !live[k.id] {
			delete(g.reported, k)
		}
	}
	for id := range g.nothing {
		if !live[id] {
			delete(g.nothing, id)
		}
	}
}

// reload applies new limits and interval; it returns the names changed.
func (g *resourceGuard) reload(n, old *config.Config) []string {
	var changed []string
	g.mu.Lock()
	if n.SessionMaxMemory != old.SessionMaxMemory || n.SessionMaxProcs != old.SessionMaxProcs || n.SessionIdle != old.SessionIdle {
		g.limits = resource.Limits{MaxMemory: n.SessionMaxMemory, MaxProcs: n.SessionMaxProcs, Idle: n.SessionIdle}
		changed = append(changed, "session-limits")
	}
	if n.ResourceInterval != old.ResourceInterval {
		g.interval = n.ResourceInterval
		select {
		case g.reset <- n.ResourceInterval:
		default:
		}
		changed = append(changed, "resource-interval")
	}
	g.mu.Unlock()
	if n.SessionMaxProcs != old.SessionMaxProcs {
		g.d.table.SetProcsLimit(n.SessionMaxProcs)
	}
	return changed
}

// resourceHealth puts the sessions' memory in a health snapshot.
func (d *daemon) resourceHealth(hd *health.Daemon) {
	var big *resource.Session
	var bigMem int64
	latest := d.latestResources()
	for i := range latest {
		s := &latest[i]
		m := s.MemoryBytes + s.KeptMemoryBytes // the box's memory: kept members too
		hd.SessionsMemoryBytes += m
		if big == nil || m > bigMem {
			big, bigMem = s, m
		}
	}
	if big != nil {
		hd.LargestSession = &health.SessionMemory{PID: big.ID.PID, Comm: big.Comm, MemoryBytes: bigMem}
	}
}

// sessionMemoryCollector is supervisor_session_memory_bytes: a histogram
// over the sessions of the latest sample (no per-session labels).
type sessionMemoryCollector struct{ g *resourceGuard }

var (
	descSessionMemory = prometheus.NewDesc("supervisor_session_memory_bytes",
		"Sessions by memory (anon RSS of their members, kept ones included) at the latest resource sample.", nil, nil)
	sessionMemoryBuckets = []float64{16 << 20, 64 << 20, 256 << 20, 512 << 20, 1 << 30, 2 << 30, 4 << 30, 8 << 30, 16 << 30, 32 << 30}
)

func (c *sessionMemoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descSessionMemory }

func (c *sessionMemoryCollector) Collect(ch chan<- prometheus.Metric) {
	latest := c.g.sampler.Latest()
	counts := make(map[float64]uint64, len(sessionMemoryBuckets))
	var sum float64
	mem := make([]float64, len(latest))
	for i := range latest {
		mem[i] = float64(latest[i].MemoryBytes + latest[i].KeptMemoryBytes)
		sum += mem[i]
	}
	sort.Float64s(mem)
	j := 0
	for _, b := range sessionMemoryBuckets {
		for j < len(mem) && mem[j] <= b {
			j++
		}
		counts[b] = uint64(j) // cumulative
	}
	ch <- prometheus.MustNewConstHistogram(descSessionMemory, uint64(len(mem)), sum, counts)
}

// keepResolve: command lines the table may read per sample to decide
// whether a --keep rule with :TEXT matches a member (under the table's
// lock; memoised until the member renames or execs): a bounded stretch of
// lock a sample for a session that gained thousands of members. A member
// not decided yet counts as not kept.
const keepResolve = 256

// threadCPU is the calling thread's CPU time in nanoseconds (0 if the
// clock cannot be read).
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}
