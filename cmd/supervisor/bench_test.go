package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// BenchmarkIntegrationLateness starts the real daemon and 150 fake agents
// with staggered starts, and measures for each kill the lateness (signal time
// minus deadline, from the daemon's record) and whether any agent got its
// SIGTERM before start + max age (by its own clock: early must be 0).
// One iteration is one full run; use -benchtime=1x.
//
//	go test -run '^$' -bench Lateness -benchtime 1x ./cmd/supervisor
func BenchmarkIntegrationLateness(b *testing.B) {
	b.Run("idle", func(b *testing.B) { benchLateness(b, false) })
	b.Run("storm", func(b *testing.B) { benchLateness(b, true) })
}

func benchLateness(b *testing.B, storm bool) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	const n = 150
	const age = 3 * time.Second
	var all []float64
	early, missed := 0, 0
	for b.Loop() {
		tb := testing.TB(b)
		d := startDaemon(tb, "--max-age", age.String(), "--agent", "lat-agent", "--log-level", "info")
		if storm {
			for range 2 {
				// A bounded fork+exec storm on both cores while agents die.
				c := exec.Command("sh", "-c", `i=0; while [ $i -lt 30000 ]; do /bin/true & i=$((i+1)); done; wait`)
				c.Start()
				b.Cleanup(func() { c.Process.Kill(); c.Wait() })
			}
		}
		agents := make([]*agent, 0, n)
		for range n {
			agents = append(agents, startAgent(tb, "lat-agent"))
		}
		for _, a := range agents {
			m := d.waitLog(tb, age+60*time.Second, killOf(a.pid))
			late := float64(num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"])) / 1e6
			all = append(all, late)
			if os.Getenv("BENCH_VERBOSE") != "" {
				fmt.Fprintf(os.Stderr, "pid %d deadline %d late %.3f ms\n", a.pid, num(m["deadline_boot_ns"]), late)
			}
			if late < 0 {
				early++
			}
			select {
			case <-a.done:
			case <-time.After(20 * time.Second):
				missed++
				continue
			}
			if _, err := os.Stat(a.term); err == nil && a.termTime(tb) < a.t0+int64(age) {
				early++
			}
		}
		d.stop(tb)
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return all[min(len(all)-1, int(p*float64(len(all))))] }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(all[len(all)-1], "max-ms")
	b.ReportMetric(float64(early), "early")
	b.ReportMetric(float64(missed), "missed")
	b.ReportMetric(0, "ns/op")
	if early > 0 || missed > 0 {
		b.Errorf("%d early, %d missed of %d", early, missed, len(all))
	}
	fmt.Fprintf(os.Stderr, "lateness over %d agents (storm=%v): p50 %.3f ms, p99 %.3f ms, max %.3f ms, early %d, missed %d\n",
		len(all), storm, pct(0.5), pct(0.99), all[len(all)-1], early, missed)
}
