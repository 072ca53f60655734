package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// threads counts pid's threads.
func threads(pid int) int {
	n, _ := strconv.Atoi(procStatus(pid, "Threads"))
	return n
}

// massResult is what one mass-kill run measured.
type massResult struct {
	agents       int
	kills        []map[string]any // the daemon's kill lines, one per agent
	firstDL      int64            // earliest deadline (CLOCK_BOOTTIME ns)
	lastDL       int64            // latest deadline
	lastSignal   int64            // latest first signal
	lastExit     int64            // when the forker reaped its last child
	exits        int
	early        int
	peakThreads  int
	peakFDs      int
	baseThreads  int // the daemon's threads once ready, before any deadline
	forkSpreadMS float64
}

func (r massResult) allSignalledMS() float64 { return float64(r.lastSignal-r.firstDL) / 1e6 }
func (r massResult) allGoneMS() float64      { return float64(r.lastExit-r.firstDL) / 1e6 }

// massKill starts n TERM-ignoring agents named name at once, then a daemon
// (scoped --under this process) whose max age puts every deadline lead
// after the daemon's start, so that all fall due together; it waits until
// every agent is gone or bound passes after the deadlines, sampling the
// daemon's threads (and fds, if fds) all along.
func massKill(t testing.TB, n int, name string, grace, lead, bound time.Duration, fds bool, wrap ...string) massResult {
	t.Helper()
	// Killing the forker (at cleanup) kills every agent left
	// (PR_SET_PDEATHSIG).
	fk := runAgent(t, exec.Command(forker(t), "burst", name, strconv.Itoa(n), "stubborn"))
	f := strings.Fields(fk.waitLine(t, "ready ", 30*time.Second)) // ready FIRST LAST
	first, _ := strconv.ParseInt(f[1], 10, 64)
	last, _ := strconv.ParseInt(f[2], 10, 64)
	res := massResult{agents: n, forkSpreadMS: float64(last-first) / 1e6}

	maxAge := (time.Duration(boottime()-first) + lead).Round(time.Millisecond)
	d := startDaemonUnder(t, wrap, nil, "--log-level", "info", "--agent", name,
		"--max-age", maxAge.String(), "--kill-grace", grace.String(), "--summary-interval", "1h")
	dpid := d.cmd.Process.Pid
	res.baseThreads = threads(dpid)
	if now := boottime(); now > first+int64(maxAge) {
		t.Logf("the daemon was ready %s after the deadlines: they fire at match", time.Duration(now-first-int64(maxAge)))
	}

	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			res.peakThreads = max(res.peakThreads, threads(dpid))
			if fds {
				res.peakFDs = max(res.peakFDs, openFDs(dpid))
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()

	// Every agent gone: the forker has reaped them all and says "done".
	end := time.Duration(first+int64(maxAge)-boottime()) + grace + bound
	fk.out.take("done", end)
	close(stop)
	<-sampled
	for _, l := range fk.out.matching("exit ") { // exit PID BOOTTIME_NS
		at, _ := strconv.ParseInt(strings.Fields(l)[2], 10, 64)
		res.exits++
		res.lastExit = max(res.lastExit, at)
	}
	if res.exits < n {
		t.Errorf("%d of %d agents still running %s after the deadlines", n-res.exits, n, end-time.Duration(first+int64(maxAge)-boottime()))
	}

	// Every kill recorded: one line per agent.
	isKill := func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == name }
	seen := 0
	d.waitLog(t, 30*time.Second, func(m map[string]any) bool {
		if isKill(m) {
			seen++
		}
		return seen >= n
	})
	res.kills = d.findLogs(isKill)
	res.firstDL, res.lastDL = int64(1)<<62, 0
	for _, m := range res.kills {
		dl, sig := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
		res.firstDL = min(res.firstDL, dl)
		res.lastDL = max(res.lastDL, dl)
		res.lastSignal = max(res.lastSignal, sig)
		if sig < dl {
			res.early++
		}
	}
	d.stop(t)
	return res
}

// TestIntegrationMassKill: 3,000 TERM-ignoring agents due together (a
// restart after downtime, a resume from suspend). Every one is signalled at
// its deadline, never before, and every one is gone within deadline + grace
// + a few seconds, while the daemon's threads stay bounded: no thread per
// kill in flight.
func TestIntegrationMassKill(t *testing.T) {
	needRoot(t)
	const n = 3000
	grace := 2 * time.Second
	bound := 20 * time.Second // generous: the daemon may run under -race
	r := massKill(t, n, "mass-agent", grace, 4*time.Second, bound, false)
	t.Logf("%d agents, forks spread %.1f ms: all signalled %.0f ms after the first deadline, all gone after %.0f ms; threads %d at start, peak %d",
		n, r.forkSpreadMS, r.allSignalledMS(), r.allGoneMS(), r.baseThreads, r.peakThreads)
	if len(r.kills) != n {
		t.Errorf("%d kill lines for %d agents", len(r.kills), n)
	}
	pids := map[int64]bool{}
	for _, m := range r.kills {
		if pids[num(m["pid"])] {
			t.Errorf("pid %d killed twice", num(m["pid"]))
		}
		pids[num(m["pid"])] = true
		if m["outcome"] != "killed" || m["final_signal"] != "KILL" {
			t.Errorf("pid %d: outcome %v, final signal %v; want killed by KILL (it ignores SIGTERM)", num(m["pid"]), m["outcome"], m["final_signal"])
		}
	}
	if r.early > 0 {
		t.Errorf("%d agents signalled before their deadline", r.early)
	}
	if gone := time.Duration(r.lastExit - r.lastDL); r.exits == n && gone > grace+bound {
		t.Errorf("last agent gone %s after the last deadline, want within grace %s + %s", gone, grace, bound)
	}
	if r.peakThreads > 64 {
		t.Errorf("the daemon peaked at %d threads during the kill, want ≤ 64", r.peakThreads)
	}
}

// TestIntegrationMassKillFewDescriptors: the same with more agents than the
// daemon may open descriptors (RLIMIT_NOFILE 512, set by prlimit on the
// daemon alone). Agents beyond the budget are queued without a pidfd, their
// start time checked; when due they are pinned (start time checked again),
// signalled and killed as descriptors free up. None is early, none is lost,
// and the daemon never runs out of descriptors.
func TestIntegrationMassKillFewDescriptors(t *testing.T) {
	needRoot(t)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit (util-linux) is needed to lower the daemon's RLIMIT_NOFILE")
	}
	const n = 1000
	grace := time.Second
	r := massKill(t, n, "fd-agent", grace, 4*time.Second, 40*time.Second, true, prlimit, "--nofile=512:512")
	late := 0.0
	for _, m := range r.kills {
		late = max(late, float64(num(m["signalled_boot_ns"])-num(m["deadline_boot_ns"]))/1e6)
		if m["outcome"] != "killed" {
			t.Errorf("pid %d: outcome %v, want killed", num(m["pid"]), m["outcome"])
		}
	}
	t.Logf("%d agents under RLIMIT_NOFILE 512: peak %d fds, %d threads; latest first signal %.0f ms after its deadline, all gone after %.0f ms",
		n, r.peakFDs, r.peakThreads, late, r.allGoneMS())
	if len(r.kills) != n {
		t.Errorf("%d kill lines for %d agents", len(r.kills), n)
	}
	if r.early > 0 {
		t.Errorf("%d agents signalled before their deadline", r.early)
	}
	if r.peakFDs >= 512 {
		t.Errorf("the daemon reached %d descriptors of 512", r.peakFDs)
	}
}
