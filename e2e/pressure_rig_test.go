package e2e

import (
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/psi/psitest"
)

// startPressureRig makes real memory pressure: a memory cgroup with a
// 20 MiB limit (v1 memory controller or cgroup v2, whichever the host has)
// and two shell loops inside it re-reading a 30 MiB file written from
// inside it. The readers are sh and cat, never agents; t.Cleanup kills
// them and removes the cgroup.
func startPressureRig(t testing.TB) *psitest.Rig {
	t.Helper()
	r := psitest.Start(t, psitest.Options{LimitMiB: 20, FileMiB: 30, Readers: 2})
	t.Logf("pressure rig: cgroup %s (v2: %v)", r.Cgroup, r.V2)
	return r
}

func readPressure(t testing.TB) psi.Pressure {
	t.Helper()
	b := readFile(t, "/proc/pressure/memory")
	p, err := psi.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIntegrationPressureRig measures what the rig does to
// /proc/pressure/memory: the share of wall time some task stalled (from the
// total counter) and avg10 after 12 s. It fails if the rig makes no
// pressure, which would make the pressure tests meaningless.
func TestIntegrationPressureRig(t *testing.T) {
	if ranApartTurn(t, "pressure") {
		return
	}
	before, t0 := readPressure(t), time.Now()
	startPressureRig(t)
	time.Sleep(12 * time.Second) // measuring a rate over a fixed span: the span is the point
	after, t1 := readPressure(t), time.Now()
	some := float64(after.Some.Total-before.Some.Total) / float64(t1.Sub(t0).Microseconds()) * 100
	full := float64(after.Full.Total-before.Full.Total) / float64(t1.Sub(t0).Microseconds()) * 100
	t.Logf("over %v: some stalled %.1f %% of the time, full %.1f %%; some avg10=%.2f avg60=%.2f, full avg10=%.2f",
		t1.Sub(t0).Round(time.Millisecond), some, full, after.Some.Avg10, after.Some.Avg60, after.Full.Avg10)
	if some < 3 || after.Some.Avg10 < 2 {
		t.Fatalf("the rig made too little pressure: some %.1f %% of the time, avg10 %.2f", some, after.Some.Avg10)
	}
}
