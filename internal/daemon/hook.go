package daemon

import (
	"encoding/json"
	"time"

	"github.com/agent-supervisor/supervisor/internal/hook"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// hookStopBound is how long running hooks may go on at shutdown (within
// their own timeout) before their process groups are killed.
const hookStopBound = 5 * time.Second

// killRecord is the JSON a hook reads on stdin: the tel.agent_kills row.
type killRecord struct {
	ID   string `json:"id,omitempty"`
	Host string `json:"host"`
	*store.KillRow
}

// runHook hands a finished kill to the --on-kill command in force (the last
// SIGHUP's). It only queues: the kill is done and recorded already.
func (d *recorder) runHook(id string, k *store.KillRow) {
	cmd := d.onKill()
	if cmd == "" {
		return
	}
	b, err := json.Marshal(killRecord{ID: id, Host: d.host, KillRow: k})
	if err != nil {
		d.log.Error("hook: encode kill record", zap.Error(err), zap.Int32("pid", k.PID))
		return
	}
	ev := hook.Event{PID: k.PID, Comm: k.Comm, Reason: k.Reason, Outcome: k.Outcome, Record: append(b, '\n')}
	if k.SessionPID != nil {
		ev.SessionPID = *k.SessionPID
	}
	d.hooks.Run(cmd, ev)
}

var (
	descHookRuns     = prometheus.NewDesc("supervisor_hook_runs_total", "--on-kill runs finished, failed or not.", nil, nil)
	descHookFailures = prometheus.NewDesc("supervisor_hook_failures_total", "--on-kill runs that exited non-zero, were killed (timeout, shutdown) or could not start.", nil, nil)
	descHookDropped  = prometheus.NewDesc("supervisor_hook_dropped_total", "--on-kill runs never started: the queue was full, or the daemon was stopping.", nil, nil)
	descHooksRunning = prometheus.NewDesc("supervisor_hooks_running", "--on-kill runs in progress.", nil, nil)
	descHooksQueued  = prometheus.NewDesc("supervisor_hooks_queued", "--on-kill runs waiting for one of the running ones to end.", nil, nil)
)

// hookCollector reads the hook runner's counters at scrape time.
type hookCollector struct{ r *hook.Runner }

func (c hookCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHookRuns, descHookFailures, descHookDropped, descHooksRunning, descHooksQueued} {
		ch <- d
	}
}

func (c hookCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	ch <- prometheus.MustNewConstMetric(descHookRuns, prometheus.CounterValue, float64(s.Runs))
	ch <- prometheus.MustNewConstMetric(descHookFailures, prometheus.CounterValue, float64(s.Failures))
	ch <- prometheus.MustNewConstMetric(descHookDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descHooksRunning, prometheus.GaugeValue, float64(s.Running))
	ch <- prometheus.MustNewConstMetric(descHooksQueued, prometheus.GaugeValue, float64(s.Queued))
}
