package top

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

// Sessions makes n sessions as /agents shows them: running, extended,
// leftovers, kept, with containers.
func sessions(n int) Snapshot {
	s := fixture()
	s.Agents = s.Agents[:0]
	for i := range n {
		a := api.AgentView{PID: int32(10000 + i), Comm: "claude", Cmdline: fmt.Sprintf("claude --session %d --dangerously-skip-permissions", i),
			StartedAt: at(-time.Duration(i) * 7 * time.Second), Deadline: at(2*time.Hour - time.Duration(i)*7*time.Second),
			SessionPID: int32(10000 + i), Members: 1 + i%9,
			SessionFigures: &api.SessionFigures{MemoryBytes: int64(100+i%900) << 20, CPUPercent: float64(i % 100), Procs: 1 + i%9}}
		switch i % 10 {
		case 3:
			a.Deadline = a.Deadline.Add(time.Hour) // extended
		case 5:
			a.ExitedAt = ptr(at(-time.Minute))
			a.Deadline = at(time.Duration(i%30) * time.Second)
		case 7:
			a.Deadline, a.SessionFigures.Exempt = time.Time{}, true
		}
		if i%4 == 0 {
			a.Info = cgroupinfo.Info{ContainerID: fmt.Sprintf("%064x", i)}
		}
		s.Agents = append(s.Agents, a)
	}
	return s
}

// BenchmarkFrame1000 renders one 80×24 frame (colour on) of 1,000
// sessions.
func BenchmarkFrame1000(b *testing.B) {
	src := &fakeSource{snap: sessions(1000)}
	m := NewModel(src, func() time.Time { return t0 }, true)
	m.SetSnapshot(src.snap)
	for range 5 {
		m.AddKill(Kill{At: t0, PID: 1, Comm: "claude", Reason: "max_age", Outcome: "terminated"})
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Frame(80, 24)
	}
}

// BenchmarkRefresh1000 is a refresh at 1,000 sessions: decoding
// /healthz's and /agents' answers, filtering and sorting, and the frame.
func BenchmarkRefresh1000(b *testing.B) {
	snap := sessions(1000)
	agents, _ := json.Marshal(snap.Agents)
	health, _ := json.Marshal(snap.Health)
	b.SetBytes(int64(len(agents) + len(health)))
	m := NewModel(&fakeSource{}, func() time.Time { return t0 }, true)
	m.Frame(80, 24)
	b.ReportAllocs()
	for b.Loop() {
		var s Snapshot
		if err := json.Unmarshal(health, &s.Health); err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(agents, &s.Agents); err != nil {
			b.Fatal(err)
		}
		m.SetSnapshot(s)
		_ = m.Frame(80, 24)
	}
}
