package main

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// killRow is the tel.agent_kills row of a reap, pending or finished.
func (d *daemon) killRow(r reap.Result) (*store.KillRow, time.Time) {
	now := d.clock.Now()
	wall := func(boot int64) time.Time { return tracker.Time(boot, now).UTC() }
	k := &store.KillRow{
		PID: r.PID, Comm: r.Comm, Cmdline: r.Cmdline, Rule: r.Rule,
		StartedAt: wall(r.Start.NS), Deadline: wall(r.Deadline), SignalledAt: wall(r.Signalled),
		LatenessMS: float64(r.Lateness()) / 1e6, FinalSignal: r.FinalSignal, Outcome: r.Outcome,
		Descendants: r.Descendants, DryRun: r.DryRun, Reason: string(r.Reason), RequestedBy: r.RequestedBy,
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
	if r.Exited != 0 {
		t := wall(r.Exited)
		k.ExitedAt = &t
	}
	return k, wall(r.Signalled)
}

// onSignal spools the kill row as soon as the agent's first signal is
// out, with outcome pending: a daemon stopped or crashed before the tree
// is gone (a long grace, thousands of kills) still leaves the record.
func (d *daemon) onSignal(r reap.Result) {
	k, at := d.killRow(r)
	rec, err := d.store.Add(store.KindKill, at, nil, k)
	if err != nil {
		d.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", r.PID))
		return
	}
	d.mu.Lock()
	if d.pending == nil {
		d.pending = map[uint64]string{}
	}
	d.pending[r.Seq] = rec.ID
	d.mu.Unlock()
	d.log.Debug("kill record pending", zap.Int32("pid", r.PID), zap.String("id", rec.ID))
}

// onResult records a finished reap: its row (completing the pending one,
// if any), its metrics, and its PID for the next snapshot's action_taken.
func (d *daemon) onResult(r reap.Result) {
	k, at := d.killRow(r)
	d.metrics.kill(r)
	d.mu.Lock()
	id, ok := d.pending[r.Seq]
	delete(d.pending, r.Seq)
	d.mu.Unlock()
	var err error
	var rec store.Record
	if ok {
		rec, err = d.store.Replace(id, store.KindKill, at, nil, k)
	} else {
		rec, err = d.store.Add(store.KindKill, at, nil, k)
	}
	if err != nil {
		d.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", r.PID))
	}
	d.publishKill(k)
	d.runHook(rec.ID, k)
	d.mu.Lock()
	switch {
	case r.DryRun || r.Outcome == reap.OutcomeRefused:
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
