package limits

import (
	"slices"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// fakeTable records what the guard asks of the tracker.
type fakeTable struct {
	kills []tracker.Reason
	procs []int
}

func (f *fakeTable) KillSession(id tracker.SessionID, why tracker.Reason, _ tracker.Figures) (tracker.LeaseResult, error) {
	f.kills = append(f.kills, why)
	return tracker.LeaseResult{PID: id.PID, Queued: []int32{id.PID}}, nil
}
func (f *fakeTable) SetProcsLimit(n int)               { f.procs = append(f.procs, n) }
func (f *fakeTable) SetKeepResolve(int)                {}
func (f *fakeTable) Lookup(int32) (tracker.Proc, bool) { return tracker.Proc{}, false }
func (f *fakeTable) Sessions() []tracker.SessionView   { return nil }

// newGuard builds a guard over fakes; rows are its dry-run rows.
func newGuard(t *testing.T, s Settings, dry bool) (*Guard, *fakeTable, *fakeSampler, *[]DryRunKill) {
	t.Helper()
	tab, smp, rows := &fakeTable{}, &fakeSampler{}, &[]DryRunKill{}
	g := New(Config{Settings: s, DryRun: dry, Table: tab, Sampler: smp, Now: func() int64 { return 1 },
		Log: zap.NewNop(), Registerer: prometheus.NewRegistry(), OnDryRun: func(r DryRunKill) { *rows = append(*rows, r) }})
	return g, tab, smp, rows
}

// fakeSampler gives the sample the test sets.
type fakeSampler struct{ out []resource.Session }

func (f *fakeSampler) Sample() ([]resource.Session, int) { return f.out, 0 }
func (f *fakeSampler) Latest() []resource.Session        { return f.out }

// TestGuardReload: a reload names what changed, in the reload line's
// order, and gives the table a new process limit only when it changed.
func TestGuardReload(t *testing.T) {
	s := Settings{Limits: resource.Limits{MaxMemory: 1 << 30, MaxProcs: 10}, Interval: 1e9} // 1 s: nothing here waits
	g, tab, _, _ := newGuard(t, s, false)
	if got := g.Reload(s); len(got) != 0 {
		t.Fatalf("reload with the same settings changed %v", got)
	}
	s.Limits.MaxMemory = 2 << 30
	if got := g.Reload(s); !slices.Equal(got, []string{"session-limits"}) || len(tab.procs) != 0 {
		t.Fatalf("memory limit reloaded: changed %v, procs limit set %v; want [session-limits], none", got, tab.procs)
	}
	s.Limits.MaxProcs, s.Interval = 20, 2e9
	if got := g.Reload(s); !slices.Equal(got, []string{"session-limits", "resource-interval"}) || !slices.Equal(tab.procs, []int{20}) {
		t.Fatalf("procs limit and interval reloaded: changed %v, procs limit set %v", got, tab.procs)
	}
}

// TestGuardTick: over a limit, a session is killed for the first limit it
// crosses; in a dry run every crossing is reported once (a row each) until
// the session ends, a pressure report through WouldKill included.
func TestGuardTick(t *testing.T) {
	s := Settings{Limits: resource.Limits{MaxMemory: 100, MaxProcs: 2}, Interval: 1e9} // 1 s: nothing here waits
	over := resource.Session{ID: tracker.SessionID{PID: 42}, Comm: "claude", MemoryBytes: 200, Procs: 3}

	g, tab, smp, rows := newGuard(t, s, false)
	smp.out = []resource.Session{over, {ID: tracker.SessionID{PID: 43}, MemoryBytes: 50, Procs: 1}}
	g.tick()
	if !slices.Equal(tab.kills, []tracker.Reason{tracker.ReasonMemory}) || len(*rows) != 0 {
		t.Fatalf("kills %v, rows %d; want [memory], none", tab.kills, len(*rows))
	}

	g, tab, smp, rows = newGuard(t, s, true)
	smp.out = []resource.Session{over}
	g.tick()
	g.tick()
	g.WouldKill(&over, resource.Crossing{Reason: tracker.ReasonPressure})
	g.WouldKill(&over, resource.Crossing{Reason: tracker.ReasonPressure})
	var got []string
	for _, r := range *rows {
		got = append(got, string(r.Reason))
	}
	want := []string{"memory", "procs", "pressure"}
	if len(tab.kills) != 0 || !slices.Equal(got, want) {
		t.Fatalf("dry run: kills %v, rows %v; want none, %v", tab.kills, got, want)
	}
	smp.out = nil // the session ended: reported again should it come back
	g.tick()
	smp.out = []resource.Session{over}
	g.tick()
	if len(*rows) != 5 {
		t.Fatalf("a session that ended and came back: %d rows; want 5", len(*rows))
	}
}
