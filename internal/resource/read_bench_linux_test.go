package resource

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// benchProcs starts n real processes, half node (when installed) and half
// sleep, for a measurement, and stops them at its end.
func benchProcs(b *testing.B, n int) []int32 {
	b.Helper()
	var pids []int32
	node, nodeErr := exec.LookPath("node")
	for i := 0; i < n; i++ {
		cmd := exec.Command("sleep", "1000")
		if nodeErr == nil && i%2 == 0 {
			cmd = exec.Command(node, "-e", "setInterval(()=>{}, 1e6)")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, int32(cmd.Process.Pid))
	}
	time.Sleep(2 * time.Second) // node's start-up would take the CPU from the measurement
	return pids
}

func startOf(b *testing.B, pid int32) tracker.Start {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	st, err := ParseStat(raw)
	if err != nil {
		b.Fatal(err)
	}
	return tracker.FromTicks(st.StartTicks)
}

// BenchmarkReadProcess: the candidate ways of reading one process's memory
// and CPU time, on real node and sleep processes (docs/design.md, Resource guard).
// ns/op is per process read.
func BenchmarkReadProcess(b *testing.B) {
	pids := benchProcs(b, 20)
	starts := make([]tracker.Start, len(pids))
	for i, p := range pids {
		starts[i] = startOf(b, p)
	}
	// Quiet members (these are): the clock alone, statm every 15th read.
	b.Run("chosen_idle_member", func(b *testing.B) {
		r := NewProcReader("/proc")
		for i := 0; b.Loop(); i++ {
			if _, err := r.Read(pids[i%len(pids)], starts[i%len(pids)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Busy members: the clock moved, statm is read every time.
	b.Run("chosen_cpuclock_statm_held", func(b *testing.B) {
		r := NewProcReader("/proc")
		r.refreshEvery = 0
		for i := 0; b.Loop(); i++ {
			if _, err := r.Read(pids[i%len(pids)], starts[i%len(pids)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cpuclock_only", func(b *testing.B) {
		var ts unix.Timespec
		for i := 0; b.Loop(); i++ {
			if err := unix.ClockGettime(cpuClock(pids[i%len(pids)]), &ts); err != nil {
				b.Fatal(err)
			}
		}
	})
	buf := make([]byte, 4096)
	open := func(name string) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				fd, err := unix.Open("/proc/"+strconv.Itoa(int(pids[i%len(pids)]))+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := unix.Read(fd, buf); err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
			}
		}
	}
	held := func(name string) func(b *testing.B) {
		return func(b *testing.B) {
			fds := make([]int, len(pids))
			for i, p := range pids {
				fd, err := unix.Open("/proc/"+strconv.Itoa(int(p))+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				fds[i] = fd
				defer unix.Close(fd)
			}
			for i := 0; b.Loop(); i++ {
				if _, err := unix.Pread(fds[i%len(fds)], buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("stat_rss_ticks_open", open("/stat"))
	b.Run("stat_rss_ticks_held", held("/stat"))
	b.Run("statm_anon_open", open("/statm"))
	b.Run("statm_anon_held", held("/statm"))
	b.Run("status_rssanon_open", open("/status"))
	b.Run("smaps_rollup_pss_open", open("/smaps_rollup"))
	b.Run("smaps_rollup_pss_held", held("/smaps_rollup"))
	b.Run("prometheus_procfs_stat", func(b *testing.B) {
		fs, err := procfs.NewFS("/proc")
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			p, err := fs.Proc(int(pids[i%len(pids)]))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Stat(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
