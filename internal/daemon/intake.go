package daemon

// The intake: proc connector events (or /proc polling) into the table, and
// what the table reports out to the live event stream (/events).

import (
	"context"
	"errors"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// eventLoop applies proc connector events to the table until ctx ends.
func (d *daemon) eventLoop(ctx context.Context) {
	apply := d.table.Apply // bound once: a method value allocates
	var lastWarn time.Time
	var resyncsSinceWarn int
	for {
		err := d.conn.Read(apply)
		switch {
		case err == nil:
			if d.events.Wants(events.TypeLost) {
				d.publishLost() // a gap counted after an overrun's resync
			}
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, procevents.ErrOverrun):
			t0 := time.Now()
			d.publishLost()
			d.resync()
			d.publishResync(time.Since(t0))
			resyncsSinceWarn++
			if time.Since(lastWarn) > 10*time.Second {
				st := d.conn.Stats()
				d.log.Warn("proc connector overrun: events lost, table rebuilt from /proc",
					zap.Uint64("events_lost", st.Lost), zap.Uint64("overruns", st.Overruns),
					zap.Int("resyncs_since_last_warning", resyncsSinceWarn), zap.Duration("resync_took", time.Since(t0)))
				lastWarn, resyncsSinceWarn = time.Now(), 0
			}
		default:
			d.log.Error("read proc events", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // don't spin on a persistent error
		}
	}
}

func (d *daemon) resync() {
	start := d.clock.Now() // events stamped before it are in the scan already
	retryCgroupNamespace(d.log, d.procs, d.cfg)
	done := d.table.ScanStart()
	defer done()
	scan, err := d.procs.Scan()
	if err != nil {
		d.log.Error("resync: scan /proc", zap.Error(err))
		return
	}
	d.table.MergeAt(scan, true, start)
}

// pollLoop rescans /proc every poll interval: the fallback when the proc
// connector is not available.
func (d *daemon) pollLoop(ctx context.Context) {
	tk := time.NewTicker(d.cfg.PollInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			done := d.table.ScanStart()
			scan, err := d.procs.Scan()
			if err != nil {
				done()
				d.log.Error("poll /proc", zap.Error(err))
				continue
			}
			d.table.Merge(scan, false)
			done()
		}
	}
}

// onNotice publishes what the table reports. The table may hold its lock:
// this only builds an event when a client wants it and publishes it, which
// never blocks.
func (d *daemon) onNotice(n tracker.Notice) {
	var kind events.Type
	switch n.Kind {
	case tracker.NoticeAgent:
		kind = events.TypeAgent
	case tracker.NoticeDeadline:
		kind = events.TypeDeadline
	case tracker.NoticeLeftover:
		kind = events.TypeLeftover
	default:
		return
	}
	if !d.events.Wants(kind) {
		return
	}
	// One reading of both clocks: every time in the message moves together.
	w := tracker.ReadWall(d.clock.Now)
	wall := func(boot int64) time.Time { return w.Time(boot).UTC() }
	switch kind {
	case events.TypeAgent:
		d.events.Publish(&events.Agent{PID: n.PID, Comm: n.Comm, Cmdline: n.Cmdline, Rule: n.Rule,
			StartedAt: wall(n.Start.NS), Deadline: wall(n.Deadline), SessionPID: n.Session.PID, Info: n.Cgroup})
	case events.TypeDeadline:
		d.events.Publish(&events.Deadline{PID: n.PID, Comm: n.Comm, Rule: n.Rule, Reason: string(n.Reason), Cause: n.Cause,
			Previous: wall(n.Previous), Deadline: wall(n.Deadline), SessionPID: n.Session.PID})
	case events.TypeLeftover:
		d.events.Publish(&events.Leftover{PID: n.PID, Comm: n.Comm, Cmdline: n.Cmdline, Rule: n.Rule,
			SessionPID: n.Session.PID, KillAt: wall(n.Deadline), Info: n.Cgroup})
	}
}

// publishSnapshot publishes a health row, as spooled.
func (d *daemon) publishSnapshot(row *store.SnapshotRow) {
	if d.events.Wants(events.TypeSnapshot) {
		d.events.Publish(&events.Snapshot{Status: row.Status, Details: row.Details, ActionTaken: row.ActionTaken})
	}
}

// publishLost publishes the events the kernel dropped since the last call.
// The proc connector counts a gap when the next message arrives, which,
// after ENOBUFS, is after the resync. Called from the event loop only.
func (d *daemon) publishLost() {
	total := d.conn.Stats().Lost
	if total <= d.lostSeen {
		return
	}
	n := total - d.lostSeen
	d.lostSeen = total
	d.events.Publish(&events.Lost{Events: n, Total: total})
}

// publishResync publishes a finished rebuild of the table from /proc.
func (d *daemon) publishResync(took time.Duration) {
	if !d.events.Wants(events.TypeResync) {
		return
	}
	st := d.table.Stats()
	d.events.Publish(&events.Resync{TookMS: float64(took) / 1e6, Processes: st.Processes,
		EventsLost: d.conn.Stats().Lost, Resyncs: st.Resyncs})
}
