package daemon

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
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
	h.SpoolHeld = d.store.Spool().Held()
	h.Degraded = append(d.store.Faults(), d.state.stateFaults()...)
	switch {
	case d.store.Up():
		h.Database = "up"
	case d.store.HasDatabase():
		h.Database = "down"
	}
	h.PressureSomeAvg10 = d.pressureSomeAvg10()
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
func (d *daemon) agentViews(q api.MemberQuery) []api.AgentView { return api.Agents(agentSource{d}, q) }

// agentSource is what /agents reads: the tracker and the latest resource
// sample.
type agentSource struct{ d *daemon }

func (a agentSource) Now() int64                            { return a.d.clock.Now() }
func (a agentSource) Queue() []tracker.Agent                { return a.d.table.Queue().Snapshot() }
func (a agentSource) Sessions() []tracker.SessionView       { return a.d.table.Sessions() }
func (a agentSource) Lookup(pid int32) (tracker.Proc, bool) { return a.d.table.Lookup(pid) }
func (a agentSource) Latest() []resource.Session            { return a.d.res.Latest() }

// The members of /agents?members= (api/members.go).
func (a agentSource) SessionMembers(buf []tracker.Member) []tracker.Member {
	return a.d.table.SessionMembers(buf)
}
func (a agentSource) MemberMemory(pid int32, start tracker.Start) (int64, bool) {
	return a.d.res.MemberMemory(pid, start)
}

// Cmdline reads pid's command line, and gives it only if pid still is
// the process that started at start once it is read.
func (a agentSource) Cmdline(pid int32, start tracker.Start) string {
	c, err := a.d.procs.Cmdline(pid)
	if err != nil {
		return ""
	}
	if st, err := a.d.procs.Stat(pid); err != nil || !st.Start.Same(start) {
		return ""
	}
	return c
}

// pressureSomeAvg10 reads the memory pressure file's "some avg10" for
// /healthz: the --pressure-file, else the system's; nil without PSI.
func (d *daemon) pressureSomeAvg10() *float64 {
	file := d.liveConfig().PressureFile
	if file == "" {
		file = "/proc/pressure/memory"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	p, err := psi.Parse(b)
	if err != nil {
		return nil
	}
	v := p.Some.Avg10
	return &v
}

// snapshot takes a health snapshot and stores it as a tel.system_health row.
func (d *daemon) snapshot() (health.Snapshot, error) {
	now := time.Now()
	st := d.table.Stats()
	hd := health.Daemon{Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Resyncs: st.Resyncs, MaxAge: d.table.MaxAge(), SummaryInterval: d.summaryInterval(),
		SpoolRows: d.store.Spool().Len(), SpoolDropped: d.store.Spool().Dropped(), Sessions: st.Sessions}
	for _, n := range st.Events {
		hd.EventsReceived += n
	}
	hd.SessionsMemoryBytes, hd.LargestSession = d.res.Memory()
	if d.conn != nil {
		hd.EventsLost = d.conn.Stats().Lost
	}
	boot := d.clock.Now()
	for _, a := range d.table.Queue().Snapshot() {
		if a.Reason != tracker.ReasonMaxAge {
			continue
		}
		hd.OldestAgentAge = max(hd.OldestAgentAge, time.Duration(boot-a.Start.NS))
	}
	hd.KilledPIDs, hd.LeftoverPIDs = d.rec.takeKilled()
	snap, err := d.collector.Collect(now, hd)
	if err != nil {
		d.rec.giveBack(hd.KilledPIDs, hd.LeftoverPIDs) // they go in the next one
		return snap, err
	}
	details, err := json.Marshal(snap.Details())
	if err != nil {
		return snap, err
	}
	row := &store.SnapshotRow{CheckType: store.CheckType, Status: snap.Status, Details: details, ActionTaken: snap.ActionTaken()}
	if _, err := d.store.Add(store.KindSnapshot, now, row, nil); err != nil {
		return snap, err
	}
	d.metrics.Snapshot(snap)
	d.publishSnapshot(row)
	d.mu.Lock()
	d.lastSnapshot = now
	d.mu.Unlock()
	d.log.Info("snapshot", zap.Duration("took", time.Since(now)), zap.String("status", snap.Status), zap.Int("zombies", snap.ZombieCount),
		zap.Int64("free_mem_mb", snap.FreeMemMB), zap.Float64("swap_fraction", snap.SwapFraction),
		zap.Int("killed", len(hd.KilledPIDs)), zap.Int("leftovers_killed", len(hd.LeftoverPIDs)),
		zap.Int("agents", hd.Agents), zap.Int("sessions", hd.Sessions))
	return snap, nil
}

// summarise snapshots at start and every summary interval.
func (d *daemon) summarise(ctx context.Context) {
	t := time.NewTicker(d.cfg.SummaryInterval)
	defer t.Stop()
	for {
		if _, err := d.snapshot(); err != nil {
			d.log.Error("health snapshot", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case iv := <-d.resum:
			t.Reset(iv)
		case <-t.C:
		}
	}
}

// sampleRate keeps the event rate for status.
func (d *daemon) sampleRate(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	total := func() (n uint64) {
		for _, v := range d.table.Stats().Events {
			n += v
		}
		return n
	}
	last, at := total(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := total()
			d.rate.Store(math.Float64bits(float64(n-last) / now.Sub(at).Seconds()))
			last, at = n, now
		}
	}
}
