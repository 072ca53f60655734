package daemon

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// The live event stream: the daemon publishes to d.events (an events.Hub)
// from the table's notices, finished kills, snapshots and lost events;
// GET /events streams them as NDJSON; `supervisor events` follows it.

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
	now := d.clock.Now()
	wall := func(boot int64) time.Time { return tracker.Time(boot, now).UTC() }
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

// publishKill publishes a finished reap's kill record, as spooled.
func (d *daemon) publishKill(k *store.KillRow) {
	if d.events.Wants(events.TypeKill) {
		d.events.Publish(&events.Kill{KillRow: *k})
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
