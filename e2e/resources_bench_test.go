package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIntegrationResourceCost: what sampling costs, as the sampling
// thread's own CPU time per sample (supervisor_resource_sample_cpu_seconds_total
// over supervisor_resource_samples_total: CLOCK_THREAD_CPUTIME_ID around
// each sample, the /proc reads and the table snapshot included), at the
// default --resource-interval of 2 s, for sessions of C processes (agents ×
// children, every one a session member). Three kinds of members: idle
// (paused: their CPU clock never moves, so their statm figure is reused,
// read again every 10 s), waking (every 500 ms, a few µs of CPU each: under
// the 250 µs that makes a statm read) and busy (every 500 ms, 300 µs of CPU
// each: every sample reads every member's statm). Busy is measured at 100 ×
// 21 only: 10,100 such members would need 6 cores.
func BenchmarkIntegrationResourceCost(b *testing.B) {
	for _, size := range scale([][2]int{{10, 20}}, [][2]int{{100, 20}, {100, 100}}, [][2]int{{100, 20}, {100, 100}}) {
		for _, kind := range []string{"idle", "waking", "busy"} {
			if kind == "busy" && size[1] > 20 {
				continue
			}
			b.Run(strconv.Itoa(size[0])+"x"+strconv.Itoa(size[1])+"/"+kind, func(b *testing.B) { benchResourceCost(b, size[0], size[1], kind) })
		}
	}
}

func benchResourceCost(b *testing.B, agents, children int, kind string) {
	needRoot(b)
	window := scale(4*time.Second, 20*time.Second, 60*time.Second)
	var env []string
	switch kind {
	case "waking":
		env = append(env, "SESSFORKER_WAKE_MS=500")
	case "busy":
		env = append(env, "SESSFORKER_WAKE_MS=500", "SESSFORKER_BURN_US=300")
	}
	for b.Loop() {
		startSessions(b, "res-agent", agents, children, env...)
		total := agents * (children + 1)
		d := startDaemon(b, "--max-age", "1h", "--agent", "res-agent", "--log-level", "info",
			"--summary-interval", "1h", "--resource-interval", "2s")
		waitHealth(b, d, 60*time.Second, func(h healthView) bool { return h.Agents >= agents && h.Members >= total })
		// Past the first samples, which open every member's statm.
		for metricValue(b, d, "supervisor_resource_samples_total") < 2 {
			time.Sleep(100 * time.Millisecond)
		}
		c0, n0 := metricValue(b, d, "supervisor_resource_sample_cpu_seconds_total"), metricValue(b, d, "supervisor_resource_samples_total")
		p0, _ := procCPU(d.cmd.Process.Pid)
		time.Sleep(window)
		c1, n1 := metricValue(b, d, "supervisor_resource_sample_cpu_seconds_total"), metricValue(b, d, "supervisor_resource_samples_total")
		p1, _ := procCPU(d.cmd.Process.Pid)
		// The whole daemon over the window (every thread: GC, the proc
		// connector's events — busy members' wake-ups make none): an upper
		// bound beside the sampling thread's own figure.
		daemonPct := 100 * (p1 - p0) / window.Seconds()
		var agentsNow []agentView
		d.get(b, "/agents", &agentsNow)
		for _, v := range agentsNow {
			if v.SessionFigures != nil && v.Procs != children+1 {
				b.Errorf("session %d: %d procs sampled, want %d", v.PID, v.Procs, children+1)
			}
		}
		d.stop(b)
		if n1 <= n0 {
			b.Fatalf("no sample in %s", window)
		}
		perSample := (c1 - c0) / (n1 - n0) // seconds of CPU
		cost := 100 * perSample / 2        // % of a core at one sample per 2 s
		usPer := perSample * 1e6 / float64(total)
		record(b, "resource_cost", map[string]any{"sessions": agents, "members_each": children + 1,
			"members": total, "kind": kind, "interval": "2s", "samples": n1 - n0,
			"ms_per_sample": perSample * 1e3, "cost_cpu_pct": cost, "us_per_member": usPer, "daemon_cpu_pct": daemonPct})
		b.ReportMetric(cost, "sampling-cpu-%")
		b.ReportMetric(usPer, "us/member")
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
