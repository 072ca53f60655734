package daemon

import (
	"math"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// health is /healthz's figures (the api sets the status).
func (d *daemon) health() api.HealthView {
	st := d.table.Stats()
	h := api.HealthView{Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Sessions: st.Sessions, Members: st.SessionMembers, Leftovers: st.Leftovers,
		Resyncs: st.Resyncs, Realtime: d.timer.RT(), DryRun: d.cfg.DryRun, Database: "none",
		SpoolRows: d.store.Spool().Len(), Dropped: d.store.Spool().Dropped(), SpoolBad: d.store.Spool().Bad(),
		InFlight: d.reaper.Stats().InFlight, Retrying: d.table.Queue().Retrying(), Host: d.cfg.HostID,
		Rate: math.Float64frombits(d.rate.Load()), MaxAge: d.table.MaxAge().String()}
	switch {
	case d.store.Up():
		h.Database = "up"
	case d.store.HasDatabase():
		h.Database = "down"
	}
	d.mu.Lock()
	if !d.lastSnapshot.IsZero() {
		h.LastSnap = d.lastSnapshot.UTC().Format(time.RFC3339Nano)
	}
	d.mu.Unlock()
	h.ByType = map[string]uint64{}
	for i, n := range st.Events {
		h.Events += n
		h.ByType[api.EventTypes[i]] = n
	}
	if d.conn != nil {
		cs := d.conn.Stats()
		h.EventsLost, h.Overruns, h.BadMsgs, h.Rcvbuf = cs.Lost, cs.Overruns, cs.Bad, d.conn.ReadBuffer()
		h.Forged = cs.Forged
	}
	return h
}

// agentViews is /agents.
func (d *daemon) agentViews() []api.AgentView { return api.Agents(agentSource{d}) }

// agentSource is what /agents reads: the tracker and the latest resource
// sample.
type agentSource struct{ d *daemon }

func (a agentSource) Now() int64                            { return a.d.clock.Now() }
func (a agentSource) Queue() []tracker.Agent                { return a.d.table.Queue().Snapshot() }
func (a agentSource) Sessions() []tracker.SessionView       { return a.d.table.Sessions() }
func (a agentSource) Lookup(pid int32) (tracker.Proc, bool) { return a.d.table.Lookup(pid) }
func (a agentSource) Latest() []resource.Session            { return a.d.res.Latest() }
