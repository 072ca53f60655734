package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIntegrationResourceCost: the daemon's CPU with sessions of
// paused C processes (agents × children, every one a session member),
// sampled every 2 s (the default --resource-interval) against the same
// sessions sampled once an hour: the difference is the sampling cost, in
// percent of one core.
func BenchmarkIntegrationResourceCost(b *testing.B) {
	for _, size := range scale([][2]int{{10, 20}}, [][2]int{{100, 20}, {100, 100}}, [][2]int{{100, 20}, {100, 100}}) {
		b.Run(strconv.Itoa(size[0])+"x"+strconv.Itoa(size[1]), func(b *testing.B) { benchResourceCost(b, size[0], size[1]) })
	}
}

func benchResourceCost(b *testing.B, agents, children int) {
	needRoot(b)
	window := scale(2*time.Second, 10*time.Second, 30*time.Second)
	for b.Loop() {
		startSessions(b, "res-agent", agents, children)
		total := agents * (children + 1)
		cpu := map[string]float64{}
		for _, iv := range []string{"1h", "2s"} {
			d := startDaemon(b, "--max-age", "1h", "--agent", "res-agent", "--log-level", "info",
				"--summary-interval", "1h", "--resource-interval", iv)
			pid := d.cmd.Process.Pid
			waitHealth(b, d, 60*time.Second, func(h healthView) bool { return h.Agents >= agents && h.Members >= total })
			time.Sleep(2 * time.Second) // past start-up and the first sample
			c0, _ := procCPU(pid)
			time.Sleep(window)
			c1, _ := procCPU(pid)
			cpu[iv] = 100 * (c1 - c0) / window.Seconds()
			if iv == "2s" {
				// One sample timed from outside: /agents figures are fresh.
				var agentsNow []agentView

				d.get(b, "/agents", &agentsNow)

				for _, v := range agentsNow {
					if v.SessionFigures != nil && v.Procs != children+1 {
						b.Errorf("session %d: %d procs sampled, want %d", v.PID, v.Procs, children+1)
					}
				}
			}
			d.stop(b)
		}
		cost := cpu["2s"] - cpu["1h"]
		record(b, "resource_cost", map[string]any{"sessions": agents, "members_each": children + 1,
			"members": total, "interval": "2s", "cpu_pct_sampling": cpu["2s"], "cpu_pct_baseline": cpu["1h"],
			"cost_cpu_pct": cost, "us_per_member": cost / 100 * 2e6 / float64(total)})
		b.ReportMetric(cost, "sampling-cpu-%")
		b.ReportMetric(cost/100*2e6/float64(total), "us/member")
	}
}

// BenchmarkIntegrationResourceLatency: from a session crossing its memory
// limit to the first signal. Each agent's child notes the boottime before
// it touches 200 MB (so the crossing of 100 MiB is later) and the daemon's
// kill line says when SIGTERM went out. Bounded by --resource-interval
// (2 s) plus the read of the session; a procs limit is checked at fork.
func BenchmarkIntegrationResourceLatency(b *testing.B) {
	needRoot(b)
	n := scale(2, 5, 10)
	for b.Loop() {
		d := startDaemon(b, "--max-age", "1h", "--kill-grace", "1s", "--log-level", "info",
			"--session-max-memory", "100MiB")
		var lat []float64
		for i := 0; i < n; i++ {
			dir := b.TempDir()
			mark := filepath.Join(dir, "holding")
			a := startAgent(b, "claude", "-spawn", "label=h,hold-mb=200,holding="+mark)
			m := d.waitLog(b, 60*time.Second, killOf(a.pid))
			a.waitExit(b, 10*time.Second)
			raw, err := os.ReadFile(mark)
			if err != nil {
				b.Fatal(err)
			}
			before, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			lat = append(lat, float64(num(m["signalled_boot_ns"])-before)/1e6)
		}
		d.stop(b)
		p50, p99, pmax := pcts(lat)
		record(b, "resource_latency", map[string]any{"limit": "memory 100MiB", "interval": "2s", "agents": n,
			"p50_ms": p50, "p99_ms": p99, "max_ms": pmax})
		b.ReportMetric(p50, "cross-to-signal-p50-ms")
		b.ReportMetric(pmax, "cross-to-signal-max-ms")
	}
}
