package e2e

import (
	"testing"
	"time"
)

// BenchmarkIntegrationPressureLatency: sessions of memory holders (the
// largest first), real pressure from the rig, --pressure-cooldown 0 so each
// trigger kills the next session. Per kill: the first signal
// (signalled_boot_ns of the kill line, sent by the deadline thread) minus
// the trigger's POLLPRI wake-up (woke_boot_ns, read right after poll
// returned): reading the pressure file, the policy's choice over the last
// resource sample, KillSession and the deadline thread's wake-up. Also the
// order: each victim must be the largest left.
func BenchmarkIntegrationPressureLatency(b *testing.B) {
	needRoot(b)
	needPSI(b)
	n := scale(2, 5, 10)
	const name = "psi-bench"
	for b.Loop() {
		spec := pressureSpec(b)
		d := startDaemon(b, "--agent", name, "--max-age", "1h", "--kill-grace", "1s", "--log-level", "info",
			"--pressure", spec, "--pressure-min-age", "0s", "--pressure-cooldown", "0s", "--resource-interval", "500ms")
		hs := make([]*holder, n)
		for i := range hs {
			hs[i] = startHolder(b, name, 20+10*(n-i)) // the first is the largest
		}
		waitFigures(b, d, hs...)
		t0 := time.Now()
		startPressureRig(b)
		isKill := func(m map[string]any) bool {
			return m["msg"] == "memory pressure trigger fired" && m["outcome"] == "killed"
		}
		seen := 0
		d.waitLog(b, time.Duration(n)*30*time.Second, func(m map[string]any) bool {
			if isKill(m) {
				seen++
			}
			return seen >= n
		})
		var lat []float64
		order := 0
		for i, f := range d.findLogs(isKill) {
			pid := num(f["session_pid"])
			if i < n && pid == int64(hs[i].pid) {
				order++
			}
			k := d.waitLog(b, 30*time.Second, func(m map[string]any) bool {
				return m["msg"] == "kill" && m["reason"] == "pressure" && num(m["pid"]) == pid
			})
			lat = append(lat, float64(num(k["signalled_boot_ns"])-num(f["woke_boot_ns"]))/1e6)
		}
		took := time.Since(t0)
		d.stop(b)
		p50, p99, pmax := pcts(lat)
		record(b, "pressure_latency", map[string]any{"trigger": spec, "sessions": n, "kills": len(lat), "in_order": order,
			"latency_p50_ms": p50, "latency_p99_ms": p99, "latency_max_ms": pmax, "took_s": took.Seconds()})
		b.ReportMetric(p50, "p50-ms")
		b.ReportMetric(pmax, "max-ms")
		if len(lat) != n || order != n {
			b.Fatalf("%d kills, %d in order of size; want %d", len(lat), order, n)
		}
	}
}
