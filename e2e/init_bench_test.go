package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkIntegrationInitCost: `supervisor init` as PID 1 of a fresh PID
// namespace (a container's entrypoint), against tini in the same place and
// the same run: the init's CPU (utime + stime) and RSS while CMD idles, and
// while CMD makes short-lived orphans at a fixed rate, all of which the init
// must reap; and the zombies left after the storm (must be 0).
func BenchmarkIntegrationInitCost(b *testing.B) {
	for _, side := range []string{"supervisor", "tini"} {
		b.Run(side, func(b *testing.B) { benchInitCost(b, side) })
	}
}

func benchInitCost(b *testing.B, side string) {
	needRoot(b)
	needUnshare(b)
	settle := scale(300*time.Millisecond, 2*time.Second, 3*time.Second)
	idle := scale(300*time.Millisecond, 5*time.Second, 30*time.Second)
	rate := scale(1000, 1000, 1000) // orphans a second
	secs := scale(0.3, 5.0, 20.0)   // of storm
	n := int(float64(rate) * secs)
	var argv []string
	exe := supervisorBin
	switch side {
	case "supervisor":
		// Info, as in production: debug logs a line per process seen.
		argv = append(append([]string{supervisorBin}, initArgs(b, "--log-level", "info")...), "--")
	case "tini":
		path, err := exec.LookPath("tini")
		if err != nil {
			b.Skip("skipped: tini is not installed (apt-get install tini; scripts/bench installs it)")
		}
		argv, exe = []string{path, "--"}, path
	}
	h := initHelper(b)
	for b.Loop() {
		// CMD waits on a FIFO the benchmark holds open for reading and
		// writing (so neither side's open blocks): no polling child of
		// CMD's adds to what the init sees.
		fifo := filepath.Join(b.TempDir(), "fifo")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			b.Fatal(err)
		}
		ctl, err := os.OpenFile(fifo, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		script := fmt.Sprintf(`echo ready; read x < %[1]s; %[2]s orphans %[3]d %[4]d; %[2]s zombies 10000 %[5]s; read x < %[1]s; exit 0`,
			fifo, h, n, rate, filepath.Base(h))
		r := startInitArgv(b, true, append(argv, "sh", "-c", script), exe)
		r.waitOut(b, 30*time.Second, "ready")
		time.Sleep(settle) // past the start-up scan and first snapshot
		c0, _ := procCPU(r.pid)
		time.Sleep(idle)
		c1, rssIdle := procCPU(r.pid)
		t1 := time.Now()
		fmt.Fprintln(ctl, "go")
		l := r.waitOut(b, time.Duration(secs*float64(time.Second))+60*time.Second, "orphans ")
		storm := time.Since(t1).Seconds()
		c2, rssStorm := procCPU(r.pid)
		peak := vmHWM(r.pid)
		_, zinit, live := zombieLine(b, r.waitOut(b, 20*time.Second, "zombies").text)
		fmt.Fprintln(ctl, "stop")
		if st := r.wait(b, 30*time.Second); st != 0 {
			b.Errorf("%s exited %d, want CMD's 0", side, st)
		}
		ctl.Close()
		made, _ := strconv.Atoi(strings.Fields(l.text)[1])
		res := map[string]any{"init": side, "idle_s": idle.Seconds(), "idle_cpu_pct": 100 * (c1 - c0) / idle.Seconds(),
			"orphans": made, "storm_s": storm, "orphans_per_s": float64(made) / storm,
			"storm_cpu_pct": 100 * (c2 - c1) / storm, "cpu_ms_per_1000_orphans": 1e6 * (c2 - c1) / float64(max(made, 1)),
			"rss_idle_mb": float64(rssIdle) / (1 << 20), "rss_storm_mb": float64(rssStorm) / (1 << 20),
			"rss_peak_mb": float64(peak) / (1 << 20), "zombies_left": zinit + live}
		record(b, "init_cost", res)
		b.ReportMetric(res["idle_cpu_pct"].(float64), "idle-cpu-%")
		b.ReportMetric(res["storm_cpu_pct"].(float64), "storm-cpu-%")
		b.ReportMetric(float64(rssStorm)/(1<<20), "rss-MB")
		if zinit+live != 0 || made != n {
			b.Errorf("%s: %d of %d orphans made, %d zombies and %d orphans left after the storm", side, made, n, zinit, live)
		}
	}
}

// vmHWM is the peak RSS of pid in bytes (VmHWM in /proc/PID/status).
func vmHWM(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
