package resource

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/procfs"
)

// benchProcs starts n real processes (node when there, else sleep) for a
// measurement and stops them at its end.
func benchProcs(b *testing.B, n int) []int32 {
	b.Helper()
	var pids []int32
	for i := 0; i < n; i++ {
		var cmd *exec.Cmd
		if node, err := exec.LookPath("node"); err == nil && i%2 == 0 {
			cmd = exec.Command(node, "-e", "setInterval(()=>{}, 1e6)")
		} else {
			cmd = exec.Command("sleep", "1000")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, int32(cmd.Process.Pid))
	}
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

// The memory measures' costs per process, on real node and sleep processes
// (README, Resource guard). ns/op is per process.
func BenchmarkReadProcess(b *testing.B) {
	pids := benchProcs(b, 20)
	starts := make([]tracker.Start, len(pids))
	for i, p := range pids {
		starts[i] = startOf(b, p)
	}
	for _, m := range []struct {
		name    string
		measure Measure
	}{{"stat_rss", RSS}, {"stat_statm_anon", AnonRSS}} {
		b.Run(m.name, func(b *testing.B) {
			r := NewProcReader("/proc", m.measure)
			for i := 0; b.Loop(); i++ {
				j := i % len(pids)
				if _, err := r.Read(pids[j], starts[j]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	file := func(name string) func(b *testing.B) {
		return func(b *testing.B) {
			r := NewProcReader("/proc", RSS)
			for i := 0; b.Loop(); i++ {
				if _, err := r.readFile(pids[i%len(pids)], name); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("status_read_only", file("/status"))
	b.Run("smaps_rollup_pss_read_only", file("/smaps_rollup"))
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

// The same reads through descriptors held open between samples (pread at
// offset 0 regenerates a seq_file), against open+read+close each time.
func BenchmarkReadHeld(b *testing.B) {
	for _, kind := range []string{"sleep", "node"} {
		var pids []int32
		for _, p := range benchProcs(b, 40) {
			pids = append(pids, p)
		}
		var sel []int32
		for i, p := range pids {
			if (kind == "node") == (i%2 == 0) {
				sel = append(sel, p)
			}
		}
		for _, name := range []string{"/stat", "/statm"} {
			b.Run(kind+name+"_open", func(b *testing.B) {
				r := NewProcReader("/proc", RSS)
				for i := 0; b.Loop(); i++ {
					if _, err := r.readFile(sel[i%len(sel)], name); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(kind+name+"_held", func(b *testing.B) {
				fds := make([]int, len(sel))
				for i, p := range sel {
					fd, err := syscall.Open("/proc/"+strconv.Itoa(int(p))+name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
					if err != nil {
						b.Fatal(err)
					}
					fds[i] = fd
					defer syscall.Close(fd)
				}
				buf := make([]byte, 1024)
				for i := 0; b.Loop(); i++ {
					if _, err := syscall.Pread(fds[i%len(fds)], buf, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
