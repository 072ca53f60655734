package daemon

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descEvents     = prometheus.NewDesc("supervisor_events_total", "Proc connector events received, by type (threads included).", []string{"type"}, nil)
	descLost       = prometheus.NewDesc("supervisor_events_lost_total", "Proc connector events the kernel dropped (from its sequence numbers).", nil, nil)
	descResyncs    = prometheus.NewDesc("supervisor_resyncs_total", "Table rebuilds from /proc after lost events.", nil, nil)
	descProcesses  = prometheus.NewDesc("supervisor_processes_tracked", "Live processes in the table.", nil, nil)
	descAgents     = prometheus.NewDesc("supervisor_agents_tracked", "Agents waiting for their deadline.", nil, nil)
	descSpool      = prometheus.NewDesc("supervisor_db_spool_rows", "Rows in the spool (undelivered, or kept when there is no database).", nil, nil)
	descSpoolHeld  = prometheus.NewDesc("supervisor_spool_rows_held", "Rows held in memory only because the spool's disk refused them (full, read-only, failing fsync); written out when it recovers.", nil, nil)
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
	for _, d := range []*prometheus.Desc{descEvents, descLost, descResyncs, descProcesses, descAgents, descSpool, descSpoolHeld, descSpoolDrops, descDBUp, descLastSnap,
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
	ch <- prometheus.MustNewConstMetric(descSpoolHeld, prometheus.GaugeValue, float64(d.store.Spool().Held()))
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
