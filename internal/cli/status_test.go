package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
)

// status fits 80 columns and shows agents with their max-age bar and, for
// sessions whose agent exited, each leftover with its countdown.
func TestPrintStatusLeftovers(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	exited := now.Add(-12 * time.Second)
	agents := []api.AgentView{
		{PID: 48211, Comm: "claude", StartedAt: now.Add(-112 * time.Minute), Deadline: now.Add(8 * time.Minute),
			SecondsLeft: 480, Reason: "max_age", SessionPID: 48211, Members: 7,
			SessionFigures: &api.SessionFigures{MemoryBytes: 1536 << 20, Procs: 1234, CPUPercent: 187.4}},
		{PID: 9999999, Comm: "npm run agent:r", StartedAt: now.Add(-500 * time.Hour), Deadline: now.Add(-4 * time.Hour),
			SecondsLeft: -4 * 3600, Reason: "max_age", SessionPID: 9999999, Members: 99999,
			SessionFigures: &api.SessionFigures{MemoryBytes: 999 << 30, Procs: 99999, CPUPercent: 12345}},
		{PID: 60001, Comm: "claude", StartedAt: now.Add(-3 * time.Hour), SessionPID: 60001, Members: 3,
			SessionFigures: &api.SessionFigures{KeptMemoryBytes: 6 << 30, KeptProcs: 3, Exempt: true}},
		{PID: 51977, Comm: "claude", StartedAt: now.Add(-time.Hour), Deadline: now.Add(18 * time.Second),
			SecondsLeft: 18, Reason: "leftover", SessionPID: 51977, Members: 2, ExitedAt: &exited,
			Leftovers: []api.LeftoverView{
				{PID: 51980, Comm: "next-server (v15.2.3)", KillAt: now.Add(18 * time.Second), SecondsLeft: 18},
				{PID: 52011, Comm: "mcp-server-git", KillAt: now.Add(18 * time.Second), SecondsLeft: 18},
			}},
	}
	var b bytes.Buffer
	printStatus(&b, "127.0.0.1:9847", api.HealthView{Source: "netlink", MaxAge: "2h0m0s", Database: "none"}, agents, now)
	out := b.String()
	for _, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > statusWidth {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
	for _, want := range []string{"48211  claude", "MEM PROCS  CPU%", "1.5G  1234   187", "LEFTOVERS", "51980  next-server (v1 ", "52011  mcp-server-git", "18.0s", "12.0s ago", "kept   6.0G     3     0  exempt"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "51977") != 2 {
		t.Errorf("the exited agent should appear once per leftover, not as an agent:\n%s", out)
	}
	t.Logf("\n%s", out)
}

// status shows a retrying process as such, with its attempt and when the
// next one comes, and how many kills are retrying.
func TestPrintStatusRetrying(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	next := now.Add(4 * time.Second)
	agents := []api.AgentView{{PID: 4242, Comm: "claude", StartedAt: now.Add(-2 * time.Hour), Deadline: now.Add(-30 * time.Second),
		SecondsLeft: -30, Reason: "max_age", SessionPID: 4242, State: "retrying", Attempt: 3, NextAttempt: &next}}
	var b bytes.Buffer
	printStatus(&b, "127.0.0.1:9847", api.HealthView{Source: "netlink", MaxAge: "2h0m0s", Database: "none", Retrying: 1}, agents, now)
	out := b.String()
	for _, want := range []string{"1 kills retrying", "4242  claude", "retrying", "retry 3 in 4.0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > statusWidth {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
}

// TestPrintStatusDegraded: each cause /healthz names is a line of its own.
func TestPrintStatusDegraded(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printStatus(&b, "127.0.0.1:9847", api.HealthView{Source: "netlink", MaxAge: "2h0m0s", Database: "down", Status: "degraded",
		Degraded: []string{"spool: no space left on device: rows held in memory", "database: database unreachable"}}, nil, now)
	out := b.String()
	for _, want := range []string{"DEGRADED: spool: no space left on device", "DEGRADED: database: database unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
