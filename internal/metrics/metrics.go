package metrics

import (
	"net/http"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the daemon's Prometheus metrics, all prefixed supervisor_.
// Counters the table and the socket keep already are read at scrape time
// by collectors their owners register; kills and snapshots update theirs
// as they happen.
type Metrics struct {
	reg       *prometheus.Registry
	kills     *prometheus.CounterVec
	leftovers *prometheus.CounterVec
	retries   *prometheus.CounterVec
	lateness  prometheus.Histogram
	zombies   prometheus.Gauge
	memory    *prometheus.GaugeVec
}

// New returns the metrics with every known series at 0, and the Go and
// process collectors registered.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		kills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "supervisor_kills_total",
			Help: "Kills by reason (max_age, leftover, ...), final signal (TERM, KILL, none) and outcome.",
		}, []string{"reason", "signal", "outcome"}),
		leftovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "supervisor_leftovers_total",
			Help: "Leftovers (session members that outlived their agent by the grace) killed, by outcome.",
		}, []string{"outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "supervisor_kill_retries_total",
			Help: "Processes queued to be killed again after their kill failed (EPERM, no pidfd, survived SIGKILL), by reason: one per process and attempt.",
		}, []string{"reason"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "supervisor_kill_lateness_seconds",
			Help:    "Time from an agent's deadline to its first signal (first attempts only: a retry is late by design).",
			Buckets: latencyBuckets,
		}),
		zombies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "supervisor_zombies",
			Help: "Processes in state Z at the last health snapshot.",
		}),
		memory: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "supervisor_memory_bytes",
			Help: "Memory at the last health snapshot: available, free (as the health row counts it), total, swap_used, swap_total, cgroup_current, cgroup_max.",
		}, []string{"kind"}),
	}
	// Every known series exists from the start, at 0: a series that only
	// appears with the first kill breaks rate() and alerts on it.
	m.KillReasons(tracker.ReasonMaxAge, tracker.ReasonLeftover)
	for _, c := range KillSeries {
		m.leftovers.WithLabelValues(c[1])
	}
	for _, reason := range tracker.Reasons {
		m.retries.WithLabelValues(string(reason))
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.kills, m.leftovers, m.retries, m.lateness, m.zombies, m.memory,
	)
	return m
}

// latencyBuckets are 100 µs to 10 s in 1-2.5-5 steps, written out so that
// the le labels print as the round numbers they are (a computed series
// prints 0.0010000000000000002).
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10,
}

// KillSeries are the (signal, outcome) pairs a reap can end with
// (reap.Reaper.Fire and finish): the final signal is the last one sent,
// "none" when none was.
var KillSeries = [][2]string{
	{"TERM", reap.OutcomeTerminated},
	{"KILL", reap.OutcomeKilled},
	{"TERM", reap.OutcomeGone},
	{"TERM", reap.OutcomeFailed}, // SIGTERM could not be sent
	{"KILL", reap.OutcomeFailed}, // a process survived SIGKILL
	{"none", reap.OutcomeDryRun},
	{"none", reap.OutcomeRefused},
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Forged exports the count of proc connector datagrams dropped because the
// kernel did not send them; registered once subscribed, so it reads 0 from
// the start.
func (m *Metrics) Forged(c *procevents.Conn) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "supervisor_events_forged_total",
		Help: "Proc connector datagrams dropped because their sender was not the kernel.",
	}, func() float64 { return float64(c.Stats().Forged) }))
}

// Kill counts a finished reap.
func (m *Metrics) Kill(r reap.Result) {
	sig := r.FinalSignal
	if sig == "" {
		sig = "none"
	}
	m.kills.WithLabelValues(string(r.Reason), sig, r.Outcome).Inc()
	if r.Reason == tracker.ReasonLeftover {
		m.leftovers.WithLabelValues(r.Outcome).Inc()
	}
	if n := len(r.Retried); n > 0 {
		m.retries.WithLabelValues(string(r.Reason)).Add(float64(n))
	}
	if r.Attempt == 0 {
		// The deadline thread's precision; a retry's lateness is its
		// backoff, and says nothing about it.
		m.lateness.Observe(r.Lateness().Seconds())
	}
}

// Snapshot sets the gauges of a health snapshot.
func (m *Metrics) Snapshot(s health.Snapshot) {
	m.zombies.Set(float64(s.ZombieCount))
	const mb = 1 << 20
	m.memory.WithLabelValues("available").Set(float64(s.MemAvailableMB * mb))
	m.memory.WithLabelValues("free").Set(float64(s.FreeMemMB * mb))
	m.memory.WithLabelValues("total").Set(float64(s.MemTotalMB * mb))
	m.memory.WithLabelValues("swap_used").Set(float64(s.SwapUsedMB * mb))
	m.memory.WithLabelValues("swap_total").Set(float64(s.SwapTotalMB * mb))
	if s.CgroupCurrentMB != nil {
		m.memory.WithLabelValues("cgroup_current").Set(float64(*s.CgroupCurrentMB * mb))
	}
	if s.CgroupMaxMB != nil {
		m.memory.WithLabelValues("cgroup_max").Set(float64(*s.CgroupMaxMB * mb))
	}
}

// EventHub exports the stream's client counts.
func (m *Metrics) EventHub(h *events.Hub) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "supervisor_event_clients_dropped_total",
			Help: "/events clients dropped because they fell a whole buffer of events behind.",
		}, func() float64 { return float64(h.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "supervisor_event_clients_refused_total",
			Help: "/events clients refused (503) because the most allowed were connected.",
		}, func() float64 { return float64(h.Refused()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "supervisor_event_clients",
			Help: "/events clients connected.",
		}, func() float64 { return float64(h.Clients()) }),
	)
}

// Register adds collectors (the daemon's parts export their own counters).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// KillReasons makes every kill series of these reasons exist at 0 (a
// policy calls it for the reasons it kills for).
func (m *Metrics) KillReasons(reasons ...tracker.Reason) {
	for _, r := range reasons {
		for _, c := range KillSeries {
			m.kills.WithLabelValues(string(r), c[0], c[1])
		}
	}
}

// Registerer is the registry, for a part that registers its own metrics.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }
