package pressure

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Publisher is the /events stream; *events.Hub is one.
type Publisher interface {
	Wants(t events.Type) bool
	Publish(ev events.Event)
}

// The event hub is what the watch publishes to.
var _ Publisher = (*events.Hub)(nil)

// Settings are what a reload may change.
type Settings struct {
	Spec     *psi.Spec     // --pressure (nil: no trigger)
	File     string        // --pressure-file ("": psi.Locate chooses)
	MinAge   time.Duration // --pressure-min-age
	Cooldown time.Duration // --pressure-cooldown
}

// Config is what Start needs.
type Config struct {
	Settings
	DryRun bool // --dry-run: a pressure kill is reported through Report
	// Members are processes standing for the sessions (supervisor init's
	// command), for psi.Locate; none under run.
	Members []int
	Now     func() int64 // CLOCK_BOOTTIME ns, the clock the samples count on
	Log     *zap.Logger
	// Registerer takes supervisor_pressure_events_total.
	Registerer prometheus.Registerer
	Samples    Samples
	Table      Table
	Report     Reporter
	Events     Publisher
}

// Watch is the running trigger and its policy.
type Watch struct {
	cfg    Config
	log    *zap.Logger
	policy *psi.Policy
	events *prometheus.CounterVec // supervisor_pressure_events_total{outcome}

	mu      sync.Mutex
	trig    *psi.Trigger // nil while off
	spec    *psi.Spec
	file    string         // --pressure-file in force ("": psi.Locate chooses)
	loops   sync.WaitGroup // the waiting goroutine(s) and a re-registration in progress
	stopped bool
	quit    chan struct{} // closed by Stop
	fired   atomic.Uint64
}

// pressureOutcomes are the policy's outcomes, every series present at 0.
var pressureOutcomes = []psi.Outcome{psi.Killed, psi.Cooling, psi.NoCandidate, psi.Failed}

// Start registers the metrics and, with a Spec (--pressure), the trigger.
// An error (no PSI on this host, a window the kernel refuses) stops the
// daemon before it is ready.
func Start(cfg Config) (*Watch, error) {
	w := &Watch{cfg: cfg, log: cfg.Log, quit: make(chan struct{}), file: cfg.File}
	w.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "supervisor_pressure_events_total",
		Help: "Memory pressure (PSI trigger) wake-ups, by what the policy did: killed, cooling (within the cooldown), no_candidate, failed.",
	}, []string{"outcome"})
	for _, o := range pressureOutcomes {
		w.events.WithLabelValues(o.String())
	}
	cfg.Registerer.MustRegister(w.events)
	w.policy = psi.NewPolicy(psi.PolicyConfig{
		MinAge: cfg.MinAge, Cooldown: cfg.Cooldown,
		Sessions: candidates{cfg.Samples}, Killer: killer{cfg.Table, cfg.Report, cfg.DryRun},
		Now: cfg.Now, Log: w.log, DryRun: cfg.DryRun,
	})
	if cfg.Spec == nil {
		if cfg.File != "" {
			w.log.Warn("--pressure-file is set without --pressure: no trigger is registered", zap.String("pressure_file", cfg.File))
		}
		return w, nil
	}
	if err := w.arm(*cfg.Spec, w.file); err != nil {
		return nil, err
	}
	return w, nil
}

// locate is the pressure file: the operator's (--pressure-file), else
// psi.Locate's choice. The rule is psi.Locate's: a cgroup's
// memory.pressure only when the cgroup limiting the daemon's memory also
// holds the sessions — under supervisor init, its command's cgroup is
// checked; under run the sessions may be anywhere (the DaemonSet's pod
// limit, a unit's MemoryMax= bound the daemon alone), so the system-wide
// file.
func (w *Watch) locate(file string) (psi.Location, error) {
	if file != "" {
		loc, err := psi.At(file)
		if err != nil {
			return loc, fmt.Errorf("--pressure-file: %w", err)
		}
		return loc, nil
	}
	loc, err := psi.Locate("/proc", "/sys/fs/cgroup", w.cfg.Members)
	if err != nil {
		return loc, fmt.Errorf("--pressure: %w", err)
	}
	return loc, nil
}

// arm locates the pressure file, registers spec on it and starts waiting,
// replacing the trigger in force, if any.
func (w *Watch) arm(spec psi.Spec, file string) error {
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
func (w *Watch) disarm() {
	w.mu.Lock()
	tr := w.trig
	w.trig, w.spec = nil, nil
	w.mu.Unlock()
	if tr != nil {
		tr.Close()
		w.log.Info("memory pressure trigger removed")
	}
}

// Armed reports whether a trigger is in force (false on a nil Watch).
func (w *Watch) Armed() bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.spec != nil
}

// Stop removes the trigger and waits for its goroutine: no pressure kill is
// queued after it returns. A nil Watch (not started) has nothing to stop.
func (w *Watch) Stop() {
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

// loop waits for tr to fire until it is closed.
func (w *Watch) loop(tr *psi.Trigger) {
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
func (w *Watch) rearm(gone *psi.Trigger) {
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
func (w *Watch) fire(tr *psi.Trigger) {
	woke := w.cfg.Now()
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
	if w.cfg.Events.Wants(events.TypePressure) {
		w.cfg.Events.Publish(&events.Pressure{Resource: "memory", SomeAvg10: p.Some.Avg10, FullAvg10: p.Full.Avg10,
			SessionPID: dec.Victim.ID.PID})
	}
}

// Reload applies a reload's pressure settings: the policy's limits at
// once, the trigger registered again if the spec or the file changed. A
// trigger that cannot be registered is logged and the old one kept. A nil
// Watch (not started yet) ignores it.
func (w *Watch) Reload(n Settings) {
	if w == nil {
		return
	}
	minAge, cooldown := w.policy.Limits()
	if n.MinAge != minAge || n.Cooldown != cooldown {
		w.policy.SetLimits(n.MinAge, n.Cooldown)
		w.log.Info("memory pressure limits reloaded", zap.Duration("min_age", n.MinAge), zap.Duration("cooldown", n.Cooldown))
	}
	w.mu.Lock()
	cur, file := w.spec, w.file
	w.mu.Unlock()
	switch {
	case n.Spec == nil && cur != nil:
		w.disarm()
	case n.Spec != nil && (cur == nil || *cur != *n.Spec || file != n.File):
		if err := w.arm(*n.Spec, n.File); err != nil {
			w.log.Error("reload: memory pressure trigger not changed", zap.Error(err))
		}
	}
}
