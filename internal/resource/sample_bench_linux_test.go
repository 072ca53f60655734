package resource

import (
	"os/exec"
	"syscall"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

type fixedMembers []tracker.Member

func (f fixedMembers) SessionMembers(buf []tracker.Member) []tracker.Member { return append(buf, f...) }

type boot struct{ ns int64 }

func (b *boot) Now() int64 { b.ns += 2e9; return b.ns }

// BenchmarkSampleReal: one Sample over 100 sessions of 20 real, idle
// processes (sleep), with the real ProcReader: the sampler's own cost per
// sample (ns/op), the table snapshot aside.
func BenchmarkSampleReal(b *testing.B) {
	const sessions, each = 100, 20
	var ms fixedMembers
	for s := 0; s < sessions; s++ {
		var id tracker.SessionID
		for i := 0; i < each; i++ {
			cmd := exec.Command("sleep", "1000")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			pid := int32(cmd.Process.Pid)
			st := startOf(b, pid)
			if i == 0 {
				id = tracker.SessionID{PID: pid, Start: st}
			}
			ms = append(ms, tracker.Member{Session: id, PID: pid, Start: st, Comm: "claude", AgentAlive: true})
		}
	}
	for _, kind := range []string{"quiet", "busy"} {
		b.Run(kind, func(b *testing.B) {
			r := NewProcReader("/proc")
			if kind == "busy" {
				r.refreshEvery = 0 // as if every member used CPU: statm every read
			}
			s := NewSampler(ms, r, &boot{})
			s.Sample()
			s.Sample()
			for b.Loop() {
				s.Sample()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(ms)), "ns/member")
		})
	}
}
