package daemon

import (
	"github.com/agent-supervisor/supervisor/internal/api"
	"math"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/hook"
	"github.com/agent-supervisor/supervisor/internal/metrics"
	"github.com/agent-supervisor/supervisor/internal/policy/limits"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// recorder turns reaps into records: the kill row (spooled pending at the
// first signal, completed when the reap ends), the kill metrics, the kill
// event, the --on-kill hook, and the PIDs the next snapshot reports as its
// action_taken.
type recorder struct {
	clock   tracker.Clock
	log     *zap.Logger
	store   *store.Store
	metrics *metrics.Metrics
	events  *events.Hub
	hooks   *hook.Runner
	host    string        // the rows' host, for the hook's record
	onKill  func() string // the --on-kill command in force (the last SIGHUP's)
	ids     *killIDs      // the same kill, the same row id in every run (resume.go)

	mu          sync.Mutex
	pending     map[uint64]pendingRow // kill rows of reaps in flight, by agent Seq
	killed      []int32               // agents killed since the last snapshot
	leftovers   []int32               // leftovers killed since the last snapshot
	results     []reap.Result         // kept by `once` for its output
	keepResults bool
	recent      []store.KillRow // the last api.RecentKills kill rows, oldest first (GET /kills)
}

// recentKills is GET /kills: the last kill rows, newest first, without
// their descendants (counted in the row's own slice length no more).
func (d *recorder) recentKills() []store.KillRow {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]store.KillRow, 0, len(d.recent))
	for i := len(d.recent) - 1; i >= 0; i-- {
		out = append(out, d.recent[i])
	}
	return out
}

// takeKilled returns the agents and leftovers killed since it was last
// called; a snapshot that fails gives them back (giveBack).
func (d *recorder) takeKilled() (killed, leftovers []int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	killed, leftovers, d.killed, d.leftovers = d.killed, d.leftovers, nil, nil
	return killed, leftovers
}

// giveBack puts PIDs taken by a failed snapshot back for the next one.
func (d *recorder) giveBack(killed, leftovers []int32) {
	d.mu.Lock()
	d.killed = append(killed, d.killed...)
	d.leftovers = append(leftovers, d.leftovers...)
	d.mu.Unlock()
}

// killRow is the tel.agent_kills row of a reap, pending or finished.
func (d *recorder) killRow(r reap.Result) (*store.KillRow, time.Time) {
	// One reading of both clocks: every time in the message moves together.
	w := tracker.ReadWall(d.clock.Now)
	wall := func(boot int64) time.Time { return w.Time(boot).UTC() }
	k := &store.KillRow{
		PID: r.PID, Comm: r.Comm, Cmdline: r.Cmdline, Rule: r.Rule,
		StartedAt: wall(r.Start.NS), Deadline: wall(r.Deadline), SignalledAt: wall(r.Signalled),
		LatenessMS: float64(r.Lateness()) / 1e6, FinalSignal: r.FinalSignal, Outcome: r.Outcome,
		Descendants: r.Descendants, DryRun: r.DryRun, Reason: string(r.Reason), RequestedBy: r.RequestedBy,
		Cgroup: r.Cgroup.Path, ContainerID: r.Cgroup.ContainerID, PodUID: r.Cgroup.PodUID,
	}
	if !r.Session.IsZero() {
		pid, started := r.Session.PID, wall(r.Session.Start.NS)
		k.SessionPID, k.SessionStartedAt = &pid, &started
	}
	if f := r.Figures; f.Known() {
		if f.MemoryBytes >= 0 {
			mem := f.MemoryBytes
			k.MemoryBytes = &mem
		}
		procs := int32(f.Procs)
		k.Procs, k.Details = &procs, f.Details
	}
	if r.Attempt > 0 || len(r.Retried) > 0 {
		k.Details = retryDetails(k.Details, r, w.Now())
	}
	if r.Exited != 0 {
		t := wall(r.Exited)
		k.ExitedAt = &t
	}
	return k, wall(r.Signalled)
}

// retryDetails adds to a kill row's details (a copy: the figures' map is
// shared by every attempt) what a retry record says. Each attempt of a
// failed kill is a row of its own, with the same reason, session and
// deadline (the first kill's, so lateness_ms counts from when the process
// was due): "attempt" is n on the n-th retry (absent on the first kill),
// and a failed attempt whose processes are queued again says when, in
// "retry_in_seconds", and how many, in "retried". So a process that
// resisted twice has rows failed, failed (attempt 1), then killed or
// terminated (attempt 2).
func retryDetails(in map[string]float64, r reap.Result, now int64) map[string]float64 {
	out := make(map[string]float64, len(in)+3)
	for k, v := range in {
		out[k] = v
	}
	if r.Attempt > 0 {
		out["attempt"] = float64(r.Attempt)
	}
	if len(r.Retried) > 0 {
		out["retried"] = float64(len(r.Retried))
		out["retry_in_seconds"] = math.Round(float64(r.RetryAt-now)/1e6) / 1e3
	}
	return out
}

// pendingRow is the spooled pending kill row of a reap in flight.
type pendingRow struct {
	id string
	at time.Time // its created_at
}

// onSignal spools the kill row as soon as the agent's first signal is
// out, with outcome pending: a daemon stopped or crashed before the tree
// is gone (a long grace, thousands of kills) still leaves the record.
func (d *recorder) onSignal(r reap.Result) {
	k, at := d.killRow(r)
	// Under the kill's own id: a row a crashed run left pending for this
	// kill is replaced, not doubled (resume.go).
	rec, err := d.store.Replace(d.ids.of(r), store.KindKill, at, nil, k)
	if err != nil {
		d.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", r.PID))
		return
	}
	d.mu.Lock()
	if d.pending == nil {
		d.pending = map[uint64]pendingRow{}
	}
	d.pending[r.Seq] = pendingRow{id: rec.ID, at: at}
	d.mu.Unlock()
	d.log.Debug("kill record pending", zap.Int32("pid", r.PID), zap.String("id", rec.ID),
		zap.Int64("deadline_boot_ns", r.Deadline), zap.Int64("signalled_boot_ns", r.Signalled))
}

// onResult records a finished reap: its row (completing the pending one,
// if any), its metrics, and its PID for the next snapshot's action_taken.
func (d *recorder) onResult(r reap.Result) {
	k, at := d.killRow(r)
	d.metrics.Kill(r)
	d.mu.Lock()
	pend, ok := d.pending[r.Seq]
	delete(d.pending, r.Seq)
	d.mu.Unlock()
	var err error
	var rec store.Record
	if ok {
		// The row's time is the pending row's: converting the signal's
		// boottime to wall time again gives a few microseconds more or
		// less, and a row delivered while pending must not change its
		// created_at when it is completed.
		rec, err = d.store.Replace(pend.id, store.KindKill, pend.at, nil, k)
	} else {
		rec, err = d.store.Replace(d.ids.of(r), store.KindKill, at, nil, k)
	}
	if err != nil {
		d.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", r.PID))
	}
	if r.Outcome == reap.OutcomeFailed || r.Outcome == reap.OutcomeRefused {
		d.ids.spend(rec.ID) // it lives on: a later kill of it is another row
	}
	if d.events.Wants(events.TypeKill) {
		d.events.Publish(&events.Kill{KillRow: *k})
	}
	again := r.Attempt > 0 && r.Outcome == reap.OutcomeFailed // a retry that failed again
	if !again {
		// The hook hears of the first failure and of how the retries
		// end, not of every attempt in between (up to one a minute).
		d.runHook(rec.ID, k)
	}
	d.mu.Lock()
	short := *k
	short.Descendants = nil // a kill storm's tree stays out of the ring
	if len(d.recent) == api.RecentKills {
		d.recent = append(d.recent[:0], d.recent[1:]...)
	}
	d.recent = append(d.recent, short)
	switch {
	case r.DryRun || r.Outcome == reap.OutcomeRefused || again:
	case r.Reason == tracker.ReasonLeftover:
		d.leftovers = append(d.leftovers, r.PID)
	default:
		d.killed = append(d.killed, r.PID) // the seed's stale_processes_killed: agents
	}
	if d.keepResults {
		d.results = append(d.results, r)
	}
	d.mu.Unlock()
}

// dryRun records what a limit would have killed in a dry run, as the
// reaper records a dry-run kill at max age.
func (d *recorder) dryRun(k limits.DryRunKill) {
	d.onResult(reap.Result{PID: k.Session.PID, Comm: k.Comm, Cmdline: k.Cmdline, Rule: k.Rule, Reason: k.Reason,
		Session: k.Session, Start: k.Session.Start, Deadline: k.At, Signalled: k.At, Outcome: reap.OutcomeDryRun,
		DryRun: true, Figures: k.Figures, Descendants: []int32{}})
}
