package daemon

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The memory pressure policy (--pressure): a PSI trigger on the memory
// pressure file (internal/psi.Locate chooses it) wakes a goroutine blocked
// in poll(2); each wake-up is counted, the policy (psi.Policy) kills at
// most one session — the largest by memory among those past
// --pressure-min-age and not exempt — and then only counts wake-ups until
// --pressure-cooldown has passed. The kernel does the watching: nothing
// here polls.

// pressureWatch is the running trigger and its policy.
type pressureWatch struct {
	d      *daemon
	log    *zap.Logger
	policy *psi.Policy
	events *prometheus.CounterVec // supervisor_pressure_events_total{outcome}

	members []int // processes standing for the sessions (supervisor init's command): psi.Locate

	mu      sync.Mutex
	trig    *psi.Trigger // nil while off
	spec    *psi.Spec
	file    string         // --pressure-file in force ("": psi.Locate chooses)
	loops   sync.WaitGroup // the waiting goroutine(s) and a re-registration in progress
	stopped bool
	quit    chan struct{} // closed by stopPressure
	fired   atomic.Uint64
}

// pressureOutcomes are the policy's outcomes, every series present at 0.
var pressureOutcomes = []psi.Outcome{psi.Killed, psi.Cooling, psi.NoCandidate, psi.Failed}

// startPressure registers the metrics and, with --pressure, the trigger.
// An error (no PSI on this host, a window the kernel refuses) stops the
// daemon before it is ready.
func (d *daemon) startPressure() error {
	w := &pressureWatch{d: d, log: d.log.Named("pressure"), quit: make(chan struct{}), file: d.cfg.PressureFile}
	if d.cfg.InitPID > 0 {
		w.members = []int{d.cfg.InitPID}
	}
	w.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "supervisor_pressure_events_total",
		Help: "Memory pressure (PSI trigger) wake-ups, by what the policy did: killed, cooling (within the cooldown), no_candidate, failed.",
	}, []string{"outcome"})
	for _, o := range pressureOutcomes {
		w.events.WithLabelValues(o.String())
	}
	d.metrics.Register(w.events)
	d.metrics.KillReasons(tracker.ReasonPressure)
	w.policy = psi.NewPolicy(psi.PolicyConfig{
		MinAge: d.cfg.PressureMinAge, Cooldown: d.cfg.PressureCooldown,
		Sessions: pressureSessions{d}, Killer: pressureKiller{d},
		Now: d.clock.Now, Log: w.log, DryRun: d.cfg.DryRun,
	})
	d.pressure = w
	if d.cfg.Pressure == nil {
		if d.cfg.PressureFile != "" {
			w.log.Warn("--pressure-file is set without --pressure: no trigger is registered", zap.String("pressure_file", d.cfg.PressureFile))
		}
		return nil
	}
	return w.arm(*d.cfg.Pressure, w.file)
}

// locate is the pressure file: the operator's (--pressure-file), else
// psi.Locate's choice. The rule is psi.Locate's: a cgroup's
// memory.pressure only when the cgroup limiting the daemon's memory also
// holds the sessions — under supervisor init, its command's cgroup is
// checked; under run the sessions may be anywhere (the DaemonSet's pod
// limit, a unit's MemoryMax= bound the daemon alone), so the system-wide
// file.
func (w *pressureWatch) locate(file string) (psi.Location, error) {
	if file != "" {
		loc, err := psi.At(file)
		if err != nil {
			return loc, fmt.Errorf("--pressure-file: %w", err)
		}
		return loc, nil
	}
	loc, err := psi.Locate("/proc", "/sys/fs/cgroup", w.members)
	if err != nil {
		return loc, fmt.Errorf("--pressure: %w", err)
	}
	return loc, nil
}

// arm locates the pressure file, registers spec on it and starts waiting,
// replacing the trigger in force, if any.
func (w *pressureWatch) arm(spec psi.Spec, file string) error {
	loc, err := w.locate(file)
	if err != nil {
		return err
	}
	tr, err := psi.Open(loc.Path, spec)
	if err != nil {
		return fmt.Errorf("--pressure %q: %w", spec.String(), err)
	}
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		tr.Close()
		return nil
	}
	old := w.trig
	w.trig, w.spec, w.file = tr, &spec, file
	w.loops.Add(1)
	w.mu.Unlock()
	if old != nil {
		old.Close() // its loop ends with ErrClosed
	}
	go w.loop(tr)
	w.log.Info("memory pressure trigger registered", zap.String("trigger", spec.String()), zap.String("kernel", spec.Kernel()),
		zap.String("file", loc.Path), zap.String("cgroup", loc.Cgroup), zap.Int64("cgroup_limit_bytes", loc.Limit),
		zap.Bool("shared_with_sessions", loc.Shared), zap.String("why", loc.Why))
	return nil
}

// disarm removes the trigger in force.
func (w *pressureWatch) disarm() {
	w.mu.Lock()
	tr := w.trig
	w.trig, w.spec = nil, nil
	w.mu.Unlock()
	if tr != nil {
		tr.Close()
		w.log.Info("memory pressure trigger removed")
	}
}

// stop removes the trigger and waits for its goroutine: no pressure kill is
// queued after it returns.
func (d *daemon) stopPressure() {
	w := d.pressure
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.quit)
	w.disarm()
	w.loops.Wait()
}

// failLogEvery is how often a failure that keeps repeating is logged again
// (with the count in a row): the first one at once, then one line a
// minute, not one a second.
const failLogEvery = time.Minute

// failLog rate-limits the lines about a failure that repeats.
type failLog struct {
	n      uint64    // failures in a row
	logged time.Time // when the last line about them was logged
}

// fail counts a failure at now and reports whether to log it.
func (f *failLog) fail(now time.Time) bool {
	f.n++
	if f.logged.IsZero() || now.Sub(f.logged) >= failLogEvery {
		f.logged = now
		return true
	}
	return false
}

// ok ends a run of failures, returning its length (0: there was none).
func (f *failLog) ok() uint64 {
	n := f.n
	*f = failLog{}
	return n
}

// loop waits for tr to fire until it is closed.
func (w *pressureWatch) loop(tr *psi.Trigger) {
	defer w.loops.Done()
	var fails failLog
	for {
		err := tr.Wait()
		switch {
		case err == nil:
			if n := fails.ok(); n > 0 {
				w.log.Info("memory pressure trigger waits again", zap.Uint64("failures_in_a_row", n))
			}
			w.fire(tr)
		case errors.Is(err, psi.ErrClosed):
			return
		case errors.Is(err, psi.ErrGone):
			// The cgroup whose file we watched was removed (a
			// container runtime reshuffling): choose again.
			w.log.Warn("memory pressure file went away; registering the trigger again", zap.String("file", tr.Path()))
			w.loops.Add(1)
			go w.rearm(tr)
			return
		default:
			// poll(2) has no documented failure here but ENOMEM; should
			// one persist, it is one line a minute with the count, not
			// one a second.
			if fails.fail(time.Now()) {
				w.log.Error("memory pressure trigger: wait failed; retrying every second", zap.Error(err),
					zap.Uint64("failures_in_a_row", fails.n), zap.Duration("logged_every", failLogEvery))
			}
			select { // not a loop of failures at full speed
			case <-w.quit:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// rearm registers the trigger again after its file went away, retrying
// every 10 s while that fails and the trigger is still wanted.
func (w *pressureWatch) rearm(gone *psi.Trigger) {
	defer w.loops.Done()
	var fails failLog
	for {
		w.mu.Lock()
		cur, spec, file, stopped := w.trig, w.spec, w.file, w.stopped
		w.mu.Unlock()
		if stopped || cur != gone || spec == nil {
			return // removed, replaced by a reload, or shut down meanwhile
		}
		err := w.arm(*spec, file)
		if err == nil {
			return
		}
		if fails.fail(time.Now()) {
			w.log.Error("memory pressure trigger not registered again; retrying every 10s", zap.Error(err),
				zap.Uint64("failures_in_a_row", fails.n), zap.Duration("logged_every", failLogEvery))
		}
		select {
		case <-w.quit:
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// fire handles one wake-up: count it, let the policy act, publish the event.
func (w *pressureWatch) fire(tr *psi.Trigger) {
	woke := w.d.clock.Now()
	w.fired.Add(1)
	p, err := tr.Read()
	if err != nil {
		w.log.Warn("memory pressure: figures unreadable; acting on the trigger alone", zap.Error(err))
	}
	dec := w.policy.Trigger(p)
	w.events.WithLabelValues(dec.Outcome.String()).Inc()
	// At info when it killed (one line a cooldown at most): the bench
	// measures wake-up to first signal from woke_boot_ns.
	level := zap.DebugLevel
	if dec.Outcome == psi.Killed {
		level = zap.InfoLevel
	}
	w.log.Log(level, "memory pressure trigger fired", zap.Int64("woke_boot_ns", woke), zap.String("outcome", dec.Outcome.String()),
		zap.Float64("some_avg10", p.Some.Avg10), zap.Float64("full_avg10", p.Full.Avg10), zap.Int32("session_pid", dec.Victim.ID.PID),
		zap.Uint64("fired_total", w.fired.Load()))
	if w.d.events.Wants(events.TypePressure) {
		w.d.events.Publish(&events.Pressure{Resource: "memory", SomeAvg10: p.Some.Avg10, FullAvg10: p.Full.Avg10,
			SessionPID: dec.Victim.ID.PID})
	}
}

// reloadPressure applies a reload's pressure settings: the policy's limits
// at once, the trigger registered again if the spec changed. A trigger
// that cannot be registered is logged and the old one kept.
func (d *daemon) reloadPressure(n *config.Config) {
	w := d.pressure
	if w == nil {
		return
	}
	minAge, cooldown := w.policy.Limits()
	if n.PressureMinAge != minAge || n.PressureCooldown != cooldown {
		w.policy.SetLimits(n.PressureMinAge, n.PressureCooldown)
		w.log.Info("memory pressure limits reloaded", zap.Duration("min_age", n.PressureMinAge), zap.Duration("cooldown", n.PressureCooldown))
	}
	w.mu.Lock()
	cur, file := w.spec, w.file
	w.mu.Unlock()
	switch {
	case n.Pressure == nil && cur != nil:
		w.disarm()
	case n.Pressure != nil && (cur == nil || *cur != *n.Pressure || file != n.PressureFile):
		if err := w.arm(*n.Pressure, n.PressureFile); err != nil {
			w.log.Error("reload: memory pressure trigger not changed", zap.Error(err))
		}
	}
}

// pressureSessions gives the policy the last resource sample. A session's
// memory there leaves out only its root-kept members (--keep, a
// control-socket keep), which the kill would spare: a REAPER_KEEP=1
// member's memory counts, and dies with the session, so a session cannot
// hide what it holds behind the marker and have a well-behaved one killed
// in its place.
type pressureSessions struct{ d *daemon }

func (s pressureSessions) Candidates() []psi.Candidate {
	latest := s.d.latestResources()
	out := make([]psi.Candidate, 0, len(latest))
	for _, r := range latest {
		if r.Killing {
			continue // already on its way out
		}
		out = append(out, psi.Candidate{ID: r.ID, Comm: r.Comm, Started: r.Started, MemoryBytes: r.MemoryBytes,
			Procs: r.Procs, Exempt: r.Exempt})
	}
	return out
}

// pressureKiller kills a session for pressure, with the PSI figures and the
// session's memory on the record.
type pressureKiller struct{ d *daemon }

func (k pressureKiller) KillForPressure(c psi.Candidate, p psi.Pressure) error {
	fig := tracker.Figures{MemoryBytes: c.MemoryBytes, Procs: c.Procs, Details: psi.Details(p)}
	if k.d.cfg.DryRun {
		// As the limits do in a dry run: a "would kill session" line and
		// a dry-run kill row, once per session, nothing queued.
		k.d.resources().wouldKill(&resource.Session{ID: c.ID, Comm: c.Comm, Started: c.Started,
			MemoryBytes: c.MemoryBytes, Procs: c.Procs}, resource.Crossing{Reason: tracker.ReasonPressure, Figures: fig})
		return nil
	}
	_, err := k.d.table.KillSession(c.ID, tracker.ReasonPressure, fig)
	return err
}
