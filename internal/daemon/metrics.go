package daemon

import (
	"net/http"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the daemon's Prometheus metrics, all prefixed supervisor_.
// Counters the table and the socket keep already are read at scrape time;
// kills and snapshots update theirs as they happen.
type metrics struct {
	reg       *prometheus.Registry
	kills     *prometheus.CounterVec
	leftovers *prometheus.CounterVec
	retries   *prometheus.CounterVec
	lateness  prometheus.Histogram
	zombies   prometheus.Gauge
	memory    *prometheus.GaugeVec
}

func newMetrics(d *daemon) *metrics {
	m := &metrics{
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
	for _, reason := range []tracker.Reason{tracker.ReasonMaxAge, tracker.ReasonLeftover} {
		for _, c := range KillSeries {
			m.kills.WithLabelValues(string(reason), c[0], c[1])
		}
	}
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
		&daemonCollector{d: d}, hookCollector{d.hooks},
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

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// forged exports the count of proc connector datagrams dropped because the
// kernel did not send them; registered once subscribed, so it reads 0 from
// the start.
func (m *metrics) forged(c *procevents.Conn) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "supervisor_events_forged_total",
		Help: "Proc connector datagrams dropped because their sender was not the kernel.",
	}, func() float64 { return float64(c.Stats().Forged) }))
}

func (m *metrics) kill(r reap.Result) {
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

func (m *metrics) snapshot(s health.Snapshot) {
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

var (
	descEvents     = prometheus.NewDesc("supervisor_events_total", "Proc connector events received, by type (threads included).", []string{"type"}, nil)
	descLost       = prometheus.NewDesc("supervisor_events_lost_total", "Proc connector events the kernel dropped (from its sequence numbers).", nil, nil)
	descResyncs    = prometheus.NewDesc("supervisor_resyncs_total", "Table rebuilds from /proc after lost events.", nil, nil)
	descProcesses  = prometheus.NewDesc("supervisor_processes_tracked", "Live processes in the table.", nil, nil)
	descAgents     = prometheus.NewDesc("supervisor_agents_tracked", "Agents waiting for their deadline.", nil, nil)
	descSpool      = prometheus.NewDesc("supervisor_db_spool_rows", "Rows in the spool (undelivered, or kept when there is no database).", nil, nil)
	descSpoolDrops = prometheus.NewDesc("supervisor_db_spool_dropped_total", "Rows dropped to keep the spool bounded.", nil, nil)
	descDBUp       = prometheus.NewDesc("supervisor_db_up", "1 if the database was reachable at the last attempt, 0 if not; absent without a database.", nil, nil)
	descSpoolBad   = prometheus.NewDesc("supervisor_db_spool_bad_total", "Damaged spool lines and rows the database refused for good, set aside in spool.bad.", nil, nil)
	descInFlight   = prometheus.NewDesc("supervisor_kills_in_flight", "Reaps signalled and not yet finished.", nil, nil)
	descPinDefer   = prometheus.NewDesc("supervisor_pins_deferred_total", "Agents queued without a pidfd (over the descriptor budget or a failed open), pinned when due.", nil, nil)
	descPinFail    = prometheus.NewDesc("supervisor_pin_failures_total", "pidfd_open or /proc reads that failed for another reason than a vanished process (EMFILE, ENOMEM, ...); each is retried.", nil, nil)
	descSigErrs    = prometheus.NewDesc("supervisor_signal_errors_total", "Signals refused (EPERM) or failed for another reason than a vanished process.", nil, nil)
	descSessions   = prometheus.NewDesc("supervisor_sessions", "Sessions tracked: an agent and everything it started, until the last member exits.", nil, nil)
	descMembers    = prometheus.NewDesc("supervisor_session_members", "Live processes in sessions, agents included.", nil, nil)
	descLeftQueued = prometheus.NewDesc("supervisor_leftovers_pending", "Leftovers waiting for the end of their grace.", nil, nil)
	descLastSnap   = prometheus.NewDesc("supervisor_last_snapshot_timestamp_seconds", "When the last health snapshot was taken.", nil, nil)
)

// daemonCollector reads the daemon's own counters at scrape time.
type daemonCollector struct{ d *daemon }

func (c *daemonCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEvents, descLost, descResyncs, descProcesses, descAgents, descSpool, descSpoolDrops, descDBUp, descLastSnap,
		descSpoolBad, descInFlight, descPinDefer, descPinFail, descSigErrs, descSessions, descMembers, descLeftQueued} {
		ch <- d
	}
}

func (c *daemonCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	st := d.table.Stats()
	for i, name := range api.EventTypes {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(st.Events[i]), name)
	}
	var lost uint64
	if d.conn != nil {
		lost = d.conn.Stats().Lost
	}
	ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(st.Resyncs))
	ch <- prometheus.MustNewConstMetric(descProcesses, prometheus.GaugeValue, float64(st.Processes))
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(st.Agents))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(st.Sessions))
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(st.SessionMembers))
	ch <- prometheus.MustNewConstMetric(descLeftQueued, prometheus.GaugeValue, float64(st.Leftovers))
	ch <- prometheus.MustNewConstMetric(descSpool, prometheus.GaugeValue, float64(d.store.Spool().Len()))
	ch <- prometheus.MustNewConstMetric(descSpoolDrops, prometheus.CounterValue, float64(d.store.Spool().Dropped()))
	ch <- prometheus.MustNewConstMetric(descSpoolBad, prometheus.CounterValue, float64(d.store.Spool().Bad()))
	rs := d.reaper.Stats()
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(rs.InFlight))
	ch <- prometheus.MustNewConstMetric(descPinDefer, prometheus.CounterValue, float64(rs.Deferred))
	ch <- prometheus.MustNewConstMetric(descPinFail, prometheus.CounterValue, float64(rs.Failures))
	ch <- prometheus.MustNewConstMetric(descSigErrs, prometheus.CounterValue, float64(rs.SignalErrors))
	if d.store.HasDatabase() {
		up := 0.0
		if d.store.Up() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descDBUp, prometheus.GaugeValue, up)
	}
	d.mu.Lock()
	last := d.lastSnapshot
	d.mu.Unlock()
	if !last.IsZero() {
		ch <- prometheus.MustNewConstMetric(descLastSnap, prometheus.GaugeValue, float64(last.UnixNano())/float64(time.Second))
	}
}
