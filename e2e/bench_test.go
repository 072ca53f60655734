package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmarks are whole scenarios on real processes; one iteration is one
// run (-benchtime=1x). Their size is set by SUPERVISOR_BENCH: unset (the
// smoke CI runs), "quick" or "full" (scripts/bench). Each appends its
// numbers as a JSON line to $BENCH_RESULTS when set; scripts/bench turns
// them into BENCHMARKS.md. Like the tests, they only touch processes they
// start: daemons run with --under this process and agent names of their own.

func scale[T any](smoke, quick, full T) T {
	switch os.Getenv("SUPERVISOR_BENCH") {
	case "full":
		return full
	case "quick":
		return quick
	}
	return smoke
}

func record(b *testing.B, scenario string, fields map[string]any) {
	fields["scenario"] = scenario
	fields["scale"] = scale("smoke", "quick", "full")
	line, _ := json.Marshal(fields)
	fmt.Fprintf(os.Stderr, "bench: %s\n", line)
	if path := os.Getenv("BENCH_RESULTS"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		f.Write(append(line, '\n'))
		f.Close()
	}
}

// pcts returns p50, p99 and max of xs (ms).
func pcts(xs []float64) (float64, float64, float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(p float64) float64 { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return at(0.5), at(0.99), s[len(s)-1]
}

// forksSinceBoot reads the "processes" line of /proc/stat: forks since boot.
func forksSinceBoot() int64 {
	b, _ := os.ReadFile("/proc/stat")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "processes "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// storm starts two bounded shell loops forking and exec'ing /bin/true, about
// 2,200 processes a second on a 2-core VM; they are killed at cleanup.
func storm(b *testing.B) {
	for range 2 {
		c := exec.Command("sh", "-c", `i=0; while [ $i -lt 400000 ]; do /bin/true & i=$((i+1)); done; wait`)
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Kill(-c.Process.Pid, syscall.SIGKILL); c.Wait() })
	}
}

// psPoller is the polling reaper users would run instead: every period a
// `ps` scan, and SIGTERM to every process named name whose etimes reached
// max age — like the seed's cron job, but without its one-second pause per
// kill (a generous version of it). It only signals PIDs in ours, and only
// through their exec.Cmd's Process (a pidfd), never by the PID ps printed.
func psPoller(period, maxAge time.Duration, name string, ours func(int) *os.Process, killed func(int, int64), stop chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		out, err := exec.Command("ps", "-eo", "pid,etimes,comm", "--no-headers").Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 || f[2] != name {
				continue
			}
			pid, _ := strconv.Atoi(f[0])
			et, _ := strconv.Atoi(f[1])
			if p := ours(pid); p != nil && et >= int(maxAge/time.Second) {
				if p.Signal(syscall.SIGTERM) == nil {
					killed(pid, boottime())
				}
			}
		}
	}
}

// BenchmarkIntegrationLateness: agents with staggered deadlines while a
// fork+exec storm keeps both cores busy; per agent the time from deadline
// to SIGTERM (as the agent saw it, and as the daemon logged it) and to
// death. Modes: the daemon on the proc connector, the daemon polling /proc,
// and a ps poller every second. Early and missed must be 0.
func BenchmarkIntegrationLateness(b *testing.B) {
	for _, mode := range []string{"netlink", "netlink-idle", "proc", "ps-poll"} {
		b.Run(mode, func(b *testing.B) { benchLateness(b, mode) })
	}
}

func benchLateness(b *testing.B, mode string) {
	needRoot(b)
	n := scale(40, 200, 500)
	age := scale(2*time.Second, 4*time.Second, 5*time.Second)
	if mode == "ps-poll" {
		age = scale(2*time.Second, 4*time.Second, 6*time.Second) // whole seconds: etimes counts seconds
	}
	const name = "lat-agent"
	for b.Loop() {
		// d reaps (netlink or proc modes). obs is a dry-run daemon on the
		// proc connector that only records each agent's exact deadline (from
		// its fork event), so the /proc poller and the ps poller, which only
		// know start times to the tick or second, are measured against the
		// same exact deadlines.
		var d, obs *testDaemon
		switch mode {
		case "netlink", "netlink-idle":
			d = startDaemon(b, "--max-age", age.String(), "--agent", name, "--log-level", "info")
			obs = d
		case "proc":
			d = startDaemon(b, "--max-age", age.String(), "--agent", name, "--log-level", "info", "--source", "proc")
		}
		if obs == nil {
			obs = startDaemon(b, "--max-age", age.String(), "--agent", name, "--log-level", "debug", "--dry-run", "--listen", "")
		}
		var polled sync.Map // pid → CLOCK_BOOTTIME of the ps poller's kill
		if mode != "netlink-idle" {
			storm(b)
		}
		f0, t0 := forksSinceBoot(), time.Now()
		agents := make([]*agent, 0, n)
		pids := map[int]*os.Process{}
		var mu sync.Mutex
		stop := make(chan struct{})
		if mode == "ps-poll" {
			go psPoller(time.Second, age, name, func(p int) *os.Process { mu.Lock(); defer mu.Unlock(); return pids[p] },
				func(p int, at int64) { polled.LoadOrStore(p, at) }, stop)
		}
		for range n {
			a := startAgent(b, name)
			mu.Lock()
			pids[a.pid] = a.cmd.Process
			mu.Unlock()
			agents = append(agents, a)
		}
		var sig, death, own []float64
		early, missed := 0, 0
		for _, a := range agents {
			// The exact deadline, from the observer's record of the fork.
			// (the observer logs it when it finds the agent: a ps poller
			// may kill up to a tick early, before the observer's deadline.)
			var o map[string]any
			oe := time.Duration(a.t0+int64(age)-boottime()) + 30*time.Second
			if obs == d {
				o = obs.waitLog(b, oe, killOf(a.pid))
			} else {
				o = obs.waitLog(b, oe, func(m map[string]any) bool { return m["msg"] == "agent" && num(m["pid"]) == int64(a.pid) })
			}
			dl := num(o["deadline_boot_ns"])
			if o["start_exact"] != true {
				b.Fatalf("observer has no exact start for %d", a.pid)
			}
			select {
			case <-a.done:
			case <-time.After(time.Duration(dl-boottime()) + 30*time.Second):
				missed++
				continue
			}
			var at int64
			switch {
			case d != nil:
				l := d.waitLog(b, 10*time.Second, killOf(a.pid))
				at = num(l["signalled_boot_ns"])
				// Against the daemon's own deadline: what its timer did, apart
				// from how late it found the agent.
				own = append(own, float64(at-num(l["deadline_boot_ns"]))/1e6)
				if at < num(l["deadline_boot_ns"]) {
					early++
				}
			default:
				v, ok := polled.Load(a.pid)
				if !ok {
					missed++
					continue
				}
				at = v.(int64)
			}
			sig = append(sig, float64(at-dl)/1e6)
			// The fork event is stamped when copy_process has finished, a
			// little after the kernel's own start time (what etimes counts
			// from), and under load more than a tick after it. A reaper that
			// reads start times from /proc can therefore signal a hair
			// before this reference without being early; the daemons'
			// early count is against their own deadline, proven never
			// earlier than the kernel's start + max age. The ps poller's is
			// against this reference.
			if d == nil && at < dl {
				early++
			}
			death = append(death, float64(a.exited-dl)/1e6)
		}
		close(stop)
		rate := float64(forksSinceBoot()-f0) / time.Since(t0).Seconds()
		if d != nil {
			d.stop(b)
		}
		obs.stop(b)
		s50, s99, smax := pcts(sig)
		d50, d99, dmax := pcts(death)
		_, o99, omax := pcts(own)
		record(b, "lateness", map[string]any{"mode": mode, "agents": n, "max_age_s": age.Seconds(),
			"forks_per_s": rate, "signal_p50_ms": s50, "signal_p99_ms": s99, "signal_max_ms": smax,
			"death_p50_ms": d50, "death_p99_ms": d99, "death_max_ms": dmax,
			"own_deadline_p99_ms": o99, "own_deadline_max_ms": omax,
			"early": early, "missed": missed, "signal_ms": sig})
		b.ReportMetric(s99, "signal-p99-ms")
		b.ReportMetric(smax, "signal-max-ms")
		b.ReportMetric(float64(early), "early")
		b.ReportMetric(float64(missed), "missed")
		// The daemon must never be early nor miss; the ps poller is the
		// comparison, and its early kills are a finding, not a failure.
		if d != nil && (early > 0 || missed > 0) {
			b.Errorf("%s: %d early, %d missed of %d", mode, early, missed, n)
		}
	}
}

// BenchmarkIntegrationBurst: agents forked within milliseconds by the C
// helper, so their deadlines fall together: how long until every one is
// signalled, and dead, after the first deadline.
func BenchmarkIntegrationBurst(b *testing.B) {
	needRoot(b)
	n := scale(100, 1000, 1000)
	const age = 3 * time.Second
	for b.Loop() {
		d := startDaemon(b, "--max-age", age.String(), "--agent", "burst-agent", "--log-level", "info", "--kill-grace", "5s")
		fk := runAgent(b, exec.Command(forker(b), "burst", "burst-agent", strconv.Itoa(n)))
		f := strings.Fields(fk.waitLine(b, "ready ", 30*time.Second)) // ready FIRST LAST
		first, _ := strconv.ParseInt(f[1], 10, 64)
		last, _ := strconv.ParseInt(f[2], 10, 64)
		fk.waitLine(b, "done", age+60*time.Second) // every agent reaped
		var lastExit int64
		exits := 0
		for _, l := range fk.out.matching("exit ") { // exit PID BOOTTIME_NS
			t, _ := strconv.ParseInt(strings.Fields(l)[2], 10, 64)
			lastExit = max(lastExit, t)
			exits++
		}
		isKill := func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == "burst-agent" }
		seen := 0
		d.waitLog(b, 30*time.Second, func(m map[string]any) bool {
			if isKill(m) {
				seen++
			}
			return seen >= n
		})
		kills := d.findLogs(isKill)
		var minDL, maxSig int64 = 1 << 62, 0
		var late []float64
		for _, m := range kills {
			minDL = min(minDL, num(m["deadline_boot_ns"]))
			maxSig = max(maxSig, num(m["signalled_boot_ns"]))
			late = append(late, float64(num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"]))/1e6)
		}
		d.stop(b)
		p50, p99, pmax := pcts(late)
		allSignalled := float64(maxSig-minDL) / 1e6
		allDead := float64(lastExit-minDL) / 1e6
		record(b, "burst", map[string]any{"reaper": "daemon", "agents": n, "killed": len(kills), "exited": exits,
			"fork_spread_ms": float64(last-first) / 1e6, "all_signalled_ms": allSignalled, "all_dead_ms": allDead,
			"lateness_p50_ms": p50, "lateness_p99_ms": p99, "lateness_max_ms": pmax})
		b.ReportMetric(allSignalled, "all-signalled-ms")
		b.ReportMetric(pmax, "max-late-ms")
		if len(kills) != n || exits != n {
			b.Errorf("%d kills, %d exits of %d agents", len(kills), exits, n)
		}
	}
}

// BenchmarkIntegrationMassKill: thousands of TERM-ignoring agents due
// together (a restart after downtime, a resume from suspend): time from the
// first deadline until every one is signalled and until every one is gone
// (through the grace period and SIGKILL), and the daemon's peak threads and
// descriptors meanwhile.
func BenchmarkIntegrationMassKill(b *testing.B) {
	for _, n := range scale([]int{300}, []int{1000}, []int{1000, 5000}) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			needRoot(b)
			grace := 2 * time.Second
			for b.Loop() {
				r := massKill(b, n, "mass-agent", grace, 5*time.Second, 60*time.Second, true)
				late := make([]float64, 0, len(r.kills))
				for _, m := range r.kills {
					late = append(late, float64(num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"]))/1e6)
				}
				p50, p99, pmax := pcts(late)
				record(b, "masskill", map[string]any{"agents": n, "killed": len(r.kills), "exited": r.exits,
					"grace_ms": float64(grace) / 1e6, "fork_spread_ms": r.forkSpreadMS,
					"all_signalled_ms": r.allSignalledMS(), "all_gone_ms": r.allGoneMS(),
					"lateness_p50_ms": p50, "lateness_p99_ms": p99, "lateness_max_ms": pmax,
					"threads_start": r.baseThreads, "threads_peak": r.peakThreads, "fds_peak": r.peakFDs, "early": r.early})
				b.ReportMetric(r.allGoneMS(), "all-gone-ms")
				b.ReportMetric(float64(r.peakThreads), "peak-threads")
				if len(r.kills) != n || r.exits != n || r.early > 0 {
					b.Errorf("%d kills, %d exits of %d agents, %d early", len(r.kills), r.exits, n, r.early)
				}
			}
		})
	}
}

// BenchmarkIntegrationSeedBurst runs the seed job itself
// (../shared/seed/process-reaper.js, with stand-ins for its db, logger and
// env imports) against agents named claude, inside a fresh PID namespace so
// that it cannot see, let alone kill, any other claude on the machine.
func BenchmarkIntegrationSeedBurst(b *testing.B) {
	needRoot(b)
	seed := os.Getenv("SEED_REAPER")
	if seed == "" {
		seed = "../../shared/seed/process-reaper.js"
	}
	if _, err := os.Stat(seed); err != nil {
		b.Skipf("skipped: the seed job is not at %s (set SEED_REAPER)", seed)
	}
	if _, err := exec.LookPath("node"); err != nil {
		b.Skip("skipped: node is not installed")
	}
	n := scale(2, 10, 20)
	for b.Loop() {
		dir := b.TempDir()
		os.MkdirAll(filepath.Join(dir, "jobs"), 0o755)
		os.MkdirAll(filepath.Join(dir, "utils"), 0o755)
		src, _ := os.ReadFile(seed)
		os.WriteFile(filepath.Join(dir, "jobs", "process-reaper.js"), src, 0o644)
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"type":"module"}`), 0o644)
		os.WriteFile(filepath.Join(dir, "utils", "db.js"), []byte("export async function run() {}\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "utils", "logger.js"), []byte("export default class Logger { info() {} warn() {} }\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "utils", "load-env.js"), []byte("\n"), 0o644)
		// In the namespace: the forker (named claude, as are its n children)
		// and the seed with max age 0, so every claude is stale at once.
		script := fmt.Sprintf(`%s burst claude %d > %s/forker.out & while ! grep -q ready %s/forker.out 2>/dev/null; do :; done; REAPER_MAX_AGENT_AGE_MINUTES=0 node %s/jobs/process-reaper.js`,
			forker(b), n, dir, dir, dir)
		c := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script)
		t0 := time.Now()
		out, err := c.Output()
		wall := time.Since(t0)
		if err != nil {
			b.Fatalf("seed: %v\n%s", err, out)
		}
		var res struct {
			Killed   []map[string]any `json:"killed"`
			Duration float64          `json:"duration_seconds"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("seed output: %v\n%s", err, out)
		}
		record(b, "burst", map[string]any{"reaper": "seed", "agents": len(res.Killed), "killed": len(res.Killed),
			"all_signalled_ms": res.Duration * 1000, "wall_ms": float64(wall) / 1e6})
		b.ReportMetric(res.Duration*1000, "all-signalled-ms")
	}
}

// BenchmarkIntegrationThroughput: the fastest fork storm the C helper can
// make; fork events the daemon received and lost against the forks made,
// and agents started during it must all be killed on time.
func BenchmarkIntegrationThroughput(b *testing.B) {
	needRoot(b)
	secs := scale(1.0, 5.0, 30.0)
	for b.Loop() {
		d := startDaemon(b, "--max-age", "2s", "--agent", "tp-agent", "--log-level", "info")
		var h0, h1 healthView
		d.get(b, "/healthz", &h0)
		// forkstat (Debian's package) listens to the same storm, when there.
		var fs *exec.Cmd
		fsOut := filepath.Join(b.TempDir(), "forkstat")
		if path, err := exec.LookPath("forkstat"); err == nil && os.Getenv("SUPERVISOR_BENCH") != "" {
			out, _ := os.Create(fsOut)
			fs = exec.Command(path, "-S", "-e", "fork", "-D", strconv.Itoa(int(secs)+2))
			fs.Stdout, fs.Stderr = out, out
			fs.Start()
			time.Sleep(500 * time.Millisecond) // let it subscribe
		}
		var wg sync.WaitGroup
		counts := make([]int64, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command(forker(b), "storm", strconv.FormatFloat(secs, 'f', 1, 64)).Output()
				if err == nil {
					counts[i], _ = strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
				}
			}()
		}
		var agents []*agent
		for range 5 {
			agents = append(agents, startAgent(b, "tp-agent"))
		}
		wg.Wait()
		missed := 0
		for _, a := range agents {
			select {
			case <-a.done:
			case <-time.After(30 * time.Second):
				missed++
			}
		}
		d.get(b, "/healthz", &h1)
		d.stop(b)
		forks := counts[0] + counts[1]
		res := map[string]any{"seconds": secs, "forks": forks, "forks_per_s": float64(forks) / secs,
			"fork_events": h1.ByType["fork"] - h0.ByType["fork"], "events_lost": h1.EventsLost - h0.EventsLost,
			"resyncs": h1.Resyncs - h0.Resyncs, "agents": len(agents), "missed": missed}
		if fs != nil {
			fs.Wait()
			res["forkstat_fork_events"] = forkstatForks(fsOut)
		}
		record(b, "throughput", res)
		st0, st1 := h0, h1
		b.ReportMetric(float64(forks)/secs, "forks/s")
		b.ReportMetric(float64(st1.EventsLost-st0.EventsLost), "lost")
		if missed > 0 {
			b.Errorf("%d agents missed during the storm", missed)
		}
	}
}

// procCPU returns utime+stime of pid in seconds, and its RSS in bytes.
func procCPU(pid int) (float64, int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return (ut + st) / 100, rss * int64(os.Getpagesize())
}

// BenchmarkIntegrationCost: CPU and RSS of the daemon idle and under a
// storm with many tracked processes, the start-up scan and a health
// snapshot at that size.
func BenchmarkIntegrationCost(b *testing.B) {
	for _, n := range scale([]int{100}, []int{1000}, []int{1000, 10000}) {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchCost(b, n) })
	}
}

func benchCost(b *testing.B, n int) {
	needRoot(b)
	window := scale(2*time.Second, 5*time.Second, 30*time.Second)
	for b.Loop() {
		c := exec.Command(forker(b), "hold", strconv.Itoa(n))
		out, _ := c.StdoutPipe()
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Kill(-c.Process.Pid, syscall.SIGKILL); c.Wait() })
		bufio.NewScanner(out).Scan() // ready
		d := startDaemon(b, "--max-age", "1h", "--agent", "cost-agent", "--log-level", "info", "--summary-interval", "1h")
		scan := d.waitLog(b, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "initial scan" })
		snap := d.waitLog(b, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "snapshot" })
		pid := d.cmd.Process.Pid
		time.Sleep(time.Second) // settle after start-up before measuring idle
		c0, _ := procCPU(pid)
		time.Sleep(window)
		c1, rss := procCPU(pid)
		storm(b)
		time.Sleep(window)
		c2, rssStorm := procCPU(pid)
		var h healthView
		d.get(b, "/healthz", &h)
		d.stop(b)
		parse := func(v any) float64 {
			dd, _ := time.ParseDuration(fmt.Sprint(v))
			return float64(dd) / 1e6
		}
		record(b, "cost", map[string]any{"processes_held": n, "processes_tracked": h.Processes,
			"scan_ms": parse(scan["took"]), "snapshot_ms": parse(snap["took"]),
			"idle_cpu_pct": 100 * (c1 - c0) / window.Seconds(), "storm_cpu_pct": 100 * (c2 - c1) / window.Seconds(),
			"rss_mb": float64(rss) / (1 << 20), "rss_storm_mb": float64(rssStorm) / (1 << 20)})
		b.ReportMetric(100*(c1-c0)/window.Seconds(), "idle-cpu-%")
		b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	}
}

// forkstatForks sums the Fork column of forkstat -S's closing table.
func forkstatForks(path string) int64 {
	b, _ := os.ReadFile(path)
	var n int64
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[0] == "Fork" && f[1] == "Exec" {
			in = true
			continue
		}
		if in && len(f) > 0 {
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				in = false
				continue
			}
			n += v
		}
	}
	return n
}

// startSessions runs the forker's sessions mode in a process group of its
// own (killed at cleanup, leftovers included), waits for "ready" and
// returns it and its stdin.
func startSessions(b *testing.B, name string, agents, children int, env ...string) (*agent, io.Writer) {
	c := exec.Command(forker(b), "sessions", name, strconv.Itoa(agents), strconv.Itoa(children))
	c.Env = append(os.Environ(), env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := c.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	s := runAgent(b, c)
	b.Cleanup(func() { syscall.Kill(-s.pid, syscall.SIGKILL) })
	s.waitLine(b, "ready", 60*time.Second)
	return s, in
}

// waitHealth polls /healthz until ok says so.
func waitHealth(b *testing.B, d *testDaemon, timeout time.Duration, ok func(healthView) bool) healthView {
	var h healthView
	waitFor(b, timeout, func() bool {
		d.get(b, "/healthz", &h)
		return ok(h)
	}, "health in the expected state: %+v", &h)
	return h
}

// BenchmarkIntegrationLeftoverLateness: sessions of an agent and one
// TERM-ignoring child; the agents exit one after another (20 ms apart) and
// each child is killed as a leftover. Per leftover: first signal minus its
// deadline (the agent's exit event + the grace), and "early": signalled
// before the deadline, or before the helper sent the agent its fatal signal
// + the grace (a bound that does not trust the daemon's clock reading).
// Idle, and under the shell fork storm.
func BenchmarkIntegrationLeftoverLateness(b *testing.B) {
	for _, mode := range []string{"idle", "storm"} {
		b.Run(mode, func(b *testing.B) { benchLeftoverLateness(b, mode) })
	}
}

func benchLeftoverLateness(b *testing.B, mode string) {
	needRoot(b)
	n := scale(20, 100, 200)
	const grace, killGrace, stagger = 2 * time.Second, time.Second, 20 * time.Millisecond
	const name = "lo-agent"
	for b.Loop() {
		d := startDaemon(b, "--max-age", "1h", "--agent", name, "--log-level", "info",
			"--leftover-grace", grace.String(), "--kill-grace", killGrace.String())
		if mode == "storm" {
			storm(b)
		}
		f0, t0 := forksSinceBoot(), time.Now()
		s, in := startSessions(b, name, n, 1)
		waitHealth(b, d, 30*time.Second, func(h healthView) bool { return h.Agents >= n })
		fmt.Fprintf(in, "exit %d\n", stagger.Microseconds())
		s.waitLine(b, "done", 60*time.Second)
		sent := map[int64]int64{}                   // agent pid → when its SIGUSR1 was sent
		for _, l := range s.out.matching("sent ") { // sent PID BOOTTIME_NS
			f := strings.Fields(l)
			pid, _ := strconv.ParseInt(f[1], 10, 64)
			sent[pid], _ = strconv.ParseInt(f[2], 10, 64)
		}
		isLeftoverKill := func(m map[string]any) bool {
			return m["msg"] == "kill" && m["reason"] == "leftover" && sent[num(m["session_pid"])] != 0
		}
		seen := 0
		d.waitLog(b, grace+killGrace+60*time.Second, func(m map[string]any) bool {
			if isLeftoverKill(m) {
				seen++
			}
			return seen >= n
		})
		rate := float64(forksSinceBoot()-f0) / time.Since(t0).Seconds()
		kills := d.findLogs(isLeftoverKill)
		d.stop(b)
		var late []float64
		early, killed := 0, 0
		sessionsKilled := map[int64]bool{}
		for _, m := range kills {
			sig, dl := num(m["signalled_boot_ns"]), num(m["deadline_boot_ns"])
			late = append(late, float64(sig-dl)/1e6)
			if sig < dl || sig < sent[num(m["session_pid"])]+int64(grace) {
				early++
			}
			if m["outcome"] == "killed" {
				killed++
			}
			sessionsKilled[num(m["session_pid"])] = true
		}
		p50, p99, pmax := pcts(late)
		record(b, "leftover_lateness", map[string]any{"mode": mode, "sessions": n, "grace_ms": float64(grace) / 1e6,
			"stagger_ms": float64(stagger) / 1e6, "forks_per_s": rate, "kills": len(kills), "killed": killed,
			"lateness_p50_ms": p50, "lateness_p99_ms": p99, "lateness_max_ms": pmax, "early": early})
		b.ReportMetric(p99, "late-p99-ms")
		b.ReportMetric(pmax, "late-max-ms")
		b.ReportMetric(float64(early), "early")
		if len(kills) != n || len(sessionsKilled) != n || killed != n || early > 0 {
			b.Errorf("%d kill lines for %d sessions of %d, %d SIGKILLed, %d early", len(kills), len(sessionsKilled), n, killed, early)
		}
	}
}

// BenchmarkIntegrationLineageCost: the daemon's CPU and RSS with many idle
// processes, nearly all of them session members (agents × children), against
// the same process tree under a name that is no agent (no session at all).
// The processes are forked while the daemon runs, so lineage comes from the
// fork events, as in production.
func BenchmarkIntegrationLineageCost(b *testing.B) {
	for _, mode := range []string{"sessions", "none"} {
		b.Run(mode, func(b *testing.B) { benchLineageCost(b, mode) })
	}
}

func benchLineageCost(b *testing.B, mode string) {
	needRoot(b)
	agents, children := scale(10, 10, 100), scale(10, 100, 100)
	window := scale(2*time.Second, 5*time.Second, 30*time.Second)
	name := "lin-agent"
	if mode == "none" {
		name = "lin-none"
	}
	for b.Loop() {
		state := b.TempDir()
		d := startDaemon(b, "--max-age", "1h", "--agent", "lin-agent", "--log-level", "info",
			"--summary-interval", "1h", "--state-dir", state)
		pid := d.cmd.Process.Pid
		cs, rss0 := procCPU(pid)
		t0 := time.Now()
		startSessions(b, name, agents, children)
		total := agents * (children + 1)
		h0 := waitHealth(b, d, 60*time.Second, func(h healthView) bool { return h.Processes >= total })
		var h healthView
		if mode == "sessions" {
			h = waitHealth(b, d, 30*time.Second, func(h healthView) bool { return h.Agents >= agents })
		} else {
			h = h0
		}
		settle := time.Since(t0)
		time.Sleep(2 * time.Second) // past a persist of the new membership
		c0, _ := procCPU(pid)
		// Forks elsewhere on the machine reach the daemon too: say how many.
		f0 := forksSinceBoot()
		time.Sleep(window)
		c1, rss := procCPU(pid)
		bgForks := float64(forksSinceBoot()-f0) / window.Seconds()
		var stateBytes int64
		if fi, err := os.Stat(filepath.Join(state, "sessions.json")); err == nil {
			stateBytes = fi.Size()
		}
		d.stop(b)
		record(b, "lineage_cost", map[string]any{"mode": mode, "agents": agents, "children_each": children,
			"processes_held": total, "processes_tracked": h.Processes, "agents_tracked": h.Agents,
			"settle_ms": float64(settle) / 1e6, "settle_cpu_s": c0 - cs, "background_forks_per_s": bgForks,
			"idle_cpu_pct": 100 * (c1 - c0) / window.Seconds(), "rss_mb": float64(rss) / (1 << 20),
			"rss_before_mb": float64(rss0) / (1 << 20), "state_bytes": stateBytes})
		b.ReportMetric(100*(c1-c0)/window.Seconds(), "idle-cpu-%")
		b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	}
}

// BenchmarkIntegrationInitCost: `supervisor init` as PID 1 of a fresh PID
// namespace (a container's entrypoint), against tini in the same place and
// the same run: the init's CPU (utime + stime) and RSS while CMD idles, and
// while CMD makes short-lived orphans at a fixed rate, all of which the init
// must reap; and the zombies left after the storm (must be 0).
//
// The supervisor runs twice (once in the smoke): the binary the tests run
// (built with cgo, linked against the machine's glibc) and the static one
// scripts/image puts in the image (build_static), which is what a
// container's init is.
func BenchmarkIntegrationInitCost(b *testing.B) {
	// The smoke (CI) leaves the static build out: it takes a minute there.
	sides := scale([]string{"supervisor", "tini"}, []string{"supervisor", "supervisor-static", "tini"}, []string{"supervisor", "supervisor-static", "tini"})
	for _, side := range sides {
		b.Run(side, func(b *testing.B) { benchInitCost(b, side) })
	}
}

var (
	staticOnce sync.Once
	staticBin  string
	staticErr  error
)

// staticSupervisor is the daemon built as scripts/image builds it
// (build_static in scripts/lib/build.sh), once per test process.
func staticSupervisor(b *testing.B) string {
	staticOnce.Do(func() {
		staticBin = filepath.Join(helperDir, "supervisor-static")
		out, err := exec.Command("bash", "-c", `cd .. && . scripts/lib/build.sh && build_static "$1"`, "build", staticBin).CombinedOutput()
		if err != nil {
			staticErr = fmt.Errorf("build_static: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		b.Fatal(staticErr)
	}
	return staticBin
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
	case "supervisor", "supervisor-static":
		if side == "supervisor-static" {
			exe = staticSupervisor(b)
		}
		// Info, as in production: debug logs a line per process seen.
		argv = append(append([]string{exe}, initArgs(b, "--log-level", "info")...), "--")
	case "tini":
		path, err := exec.LookPath("tini")
		if err != nil {
			b.Skip("skipped: tini is not installed (apt-get install tini; scripts/bench installs it)")
		}
		argv, exe = []string{path, "--"}, path
	}
	// Written out, as an installed binary is: one just linked is still
	// dirty in the page cache, which init cannot give back (its start-up
	// pages: internal/initd, pages_linux.go) until it is written.
	if f, err := os.Open(exe); err == nil {
		f.Sync()
		f.Close()
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
		anonIdle, fileIdle := rssParts(r.pid)
		t1 := time.Now()
		fmt.Fprintln(ctl, "go")
		l := r.waitOut(b, time.Duration(secs*float64(time.Second))+60*time.Second, "orphans ")
		storm := time.Since(t1).Seconds()
		c2, rssStorm := procCPU(r.pid)
		anonStorm, fileStorm := rssParts(r.pid)
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
			"rss_peak_mb": float64(peak) / (1 << 20), "zombies_left": zinit + live,
			"rss_anon_idle_mb": anonIdle, "rss_file_idle_mb": fileIdle, "rss_anon_storm_mb": anonStorm, "rss_file_storm_mb": fileStorm}
		record(b, "init_cost", res)
		b.ReportMetric(res["idle_cpu_pct"].(float64), "idle-cpu-%")
		b.ReportMetric(res["storm_cpu_pct"].(float64), "storm-cpu-%")
		b.ReportMetric(float64(rssStorm)/(1<<20), "rss-MB")
		if zinit+live != 0 || made != n {
			b.Errorf("%s: %d of %d orphans made, %d zombies and %d orphans left after the storm", side, made, n, zinit, live)
		}
	}
}

// rssParts are RssAnon and RssFile of pid in MB (/proc/PID/status): the
// heap and stacks, and the pages of the binary (and libraries) mapped.
func rssParts(pid int) (anon, file float64) {
	kb := func(key string) float64 {
		v, _ := strconv.ParseFloat(strings.TrimSuffix(procStatus(pid, key), " kB"), 64)
		return v / 1024
	}
	return kb("RssAnon"), kb("RssFile")
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
		// The minimum age keeps the holders out of reach of pressure from
		// elsewhere on the box (the benchmark before this one) until the
		// rig starts: a trigger before then finds no candidate.
		const minAge = 3 * time.Second
		d := startDaemon(b, "--agent", name, "--max-age", "1h", "--kill-grace", "1s", "--log-level", "info",
			"--pressure", spec, "--pressure-min-age", minAge.String(), "--pressure-cooldown", "0s", "--resource-interval", "500ms")
		hs := make([]*holder, n)
		for i := range hs {
			hs[i] = startHolder(b, name, 20+10*(n-i)) // the first is the largest
		}
		eligible := time.Now().Add(minAge)
		waitFigures(b, d, hs...)
		time.Sleep(time.Until(eligible)) // the policy's own rule: none is a candidate before
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
		waitFor(b, 60*time.Second, func() bool { return metricValue(b, d, "supervisor_resource_samples_total") >= 2 }, "two resource samples")
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
			raw := readFile(b, mark)
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
