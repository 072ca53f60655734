// Command benchreport turns the results of scripts/bench into BENCHMARKS.md
// and an SVG of the lateness distributions. It is run by scripts/bench.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

type result map[string]any

func (r result) f(k string) float64 {
	v, _ := r[k].(float64)
	return v
}

func (r result) s(k string) string {
	v, _ := r[k].(string)
	return v
}

func main() {
	resultsPath := flag.String("results", "", "JSON lines written by the benchmarks")
	goBench := flag.String("gobench", "", "go test -bench output of the micro-benchmarks")
	out := flag.String("out", "BENCHMARKS.md", "markdown to write")
	svg := flag.String("svg", "bench-lateness.svg", "picture to write")
	scale := flag.String("scale", "full", "quick or full")
	hyperfinePath := flag.String("hyperfine", "", "hyperfine --export-json of init's start and exit beside tini's (optional)")
	soakOnly := flag.Bool("soak-only", false, "replace only the soak section of -out with the soak results")
	flag.Parse()

	var rs []result
	f, err := os.Open(*resultsPath)
	if err != nil {
		fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			rs = append(rs, r)
		}
	}
	f.Close()
	gb, _ := os.ReadFile(*goBench)

	var md strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&md, format, a...) }
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	machine := fmt.Sprintf("%s, %d cores, %s; kernel %s; %s; %s", cpuModel(), runtime.NumCPU(), memTotal(),
		strings.TrimSpace(string(kernel)), runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if *soakOnly {
		doc, _ := os.ReadFile(*out)
		section := soakSection(rs, machine)
		if section == "" {
			fatal(fmt.Errorf("no soak results in %s", *resultsPath))
		}
		if err := os.WriteFile(*out, []byte(withSoak(string(doc), section)), 0o644); err != nil {
			fatal(err)
		}
		return
	}
	w("# Benchmarks\n\n")
	w("Written by `scripts/bench` (%s run) on %s. Machine: %s, %d cores, %s; kernel %s; %s; host %q.\n\n",
		*scale, time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), memTotal(),
		strings.TrimSpace(string(kernel)), runtime.Version(), host)
	w("Every scenario runs on real processes and real signals, scoped to processes the benchmark started. ")
	w("Each comparison runs both sides in the same run. Lateness is measured against each agent's exact deadline: ")
	w("its start as the kernel stamped it in the fork event, plus max age (a dry-run daemon on the proc connector records it ")
	w("for the modes that do not see forks).\n\n")

	// scenario calls row for each result of scenario name, and head (when
	// not nil) before the first; it returns how many there were.
	scenario := func(name string, head, row func(r result)) int {
		n := 0
		for _, r := range rs {
			if r.s("scenario") != name {
				continue
			}
			if n == 0 && head != nil {
				head(r)
			}
			n++
			row(r)
		}
		return n
	}

	var targets [][3]string // target, measured, verdict
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}

	// 1. Lateness.
	w("## 1. Lateness\n\n")
	w("\"No storm\" is not idle: the 500 agents start and die around their deadlines, and their exits are kernel work. ")
	w("This kernel is built PREEMPT_DYNAMIC and runs preempt=none (`uname -v`, `/proc/config.gz`): a SCHED_FIFO thread that wakes ")
	w("while another CPU-bound task is in the kernel (tearing down a dying process's memory) waits for it to reach a preemption point. ")
	w("That, not the daemon, is what the tail of that row measures; booting with `preempt=full` removes it. ")
	w("The exact deadline's start is the fork event's timestamp, taken when `copy_process` has finished: a little after the kernel's own start time, which `/proc` and `etimes` count from. ")
	w("Under load the gap can pass a tick, so a reaper working from `/proc` can show small negative values here without being early; the daemons' early count is against their own deadline, ")
	w("which is never earlier than the kernel's start plus max age (exact start, or the `/proc` tick rounded up). ")
	w("\"Timer vs own deadline\" is the reaper's first signal against the deadline it computed itself (for /proc polling, the start rounded up to the next 10 ms tick), so the difference to \"signal\" is what not seeing the fork costs. ")
	w("Agents with staggered deadlines; \"storm\" is two shell loops forking and exec'ing `/bin/true` on both cores ")
	w("(rate measured from `/proc/stat`). Signal = first signal minus deadline; death = exit (as its parent saw it) minus deadline. ")
	w("The ps poller scans `ps` every second and sends SIGTERM to every match whose `etimes` reached max age, at once ")
	w("(the seed does the same every 5 minutes, with a 1 s pause after each kill).\n\n")
	w("| reaper | load | agents | forks/s | signal p50 | p99 | max | timer vs own deadline p99 / max | death p50 | p99 | max | early | missed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var curves []curve
	names := map[string][2]string{
		"netlink":      {"daemon, proc connector", "storm"},
		"netlink-idle": {"daemon, proc connector", "no storm"},
		"proc":         {"daemon, /proc polling (1 s)", "storm"},
		"ps-poll":      {"ps poller, every 1 s", "storm"},
	}
	scenario("lateness", nil, func(r result) {
		n := names[r.s("mode")]
		own := "–"
		if r.s("mode") != "ps-poll" {
			own = ms(r.f("own_deadline_p99_ms")) + " / " + ms(r.f("own_deadline_max_ms"))
		}
		w("| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f |\n", n[0], n[1], r.f("agents"), r.f("forks_per_s"),
			ms(r.f("signal_p50_ms")), ms(r.f("signal_p99_ms")), ms(r.f("signal_max_ms")), own,
			ms(r.f("death_p50_ms")), ms(r.f("death_p99_ms")), ms(r.f("death_max_ms")), r.f("early"), r.f("missed"))
		var xs []float64
		if raw, ok := r["signal_ms"].([]any); ok {
			for _, v := range raw {
				xs = append(xs, v.(float64))
			}
		}
		curves = append(curves, curve{name: n[0] + ", " + n[1], xs: xs})
		switch r.s("mode") {
		case "netlink":
			ok := r.f("signal_p99_ms") <= 0.5 && r.f("signal_max_ms") <= 2
			targets = append(targets, [3]string{"seen from fork, under storm: p99 ≤ 0.5 ms, max ≤ 2 ms",
				fmt.Sprintf("p99 %s, max %s", ms(r.f("signal_p99_ms")), ms(r.f("signal_max_ms"))), verdict(ok)})
		case "proc":
			ok := r.f("early") == 0 && r.f("signal_max_ms") <= 10.5
			targets = append(targets, [3]string{"found by a /proc scan: never early, max ≤ 10.5 ms",
				fmt.Sprintf("%.0f early, max %s", r.f("early"), ms(r.f("signal_max_ms"))), verdict(ok)})
		}
	})
	if len(curves) > 0 {
		link, err := filepath.Rel(filepath.Dir(*out), *svg)
		if err != nil {
			link = *svg
		}
		w("\n![lateness distributions](%s)\n\n", link)
		w("The ps poller can also kill early: `etimes` counts from the start time truncated to the tick, so it reaches max age up to 10 ms before the exact deadline (its early count above). ")
		w("Over the seed's real period the ps poller's arithmetic is: an agent is found up to 300 s after its deadline ")
		w("(the cron period) plus 1 s of `etimes` rounding, and then waits 1 s for every stale agent ahead of it in the same scan.\n\n")
		if err := os.WriteFile(*svg, []byte(plot(curves)), 0o644); err != nil {
			fatal(err)
		}
	}

	// 2. Burst.
	w("## 2. Burst\n\nAgents forked within milliseconds by a C helper, so that their deadlines fall together. ")
	w("\"All signalled\" is from the first deadline to the last first signal. The seed job itself ")
	w("(`process-reaper.js`, run with node inside a fresh PID namespace, with stand-ins for its db/logger imports) ")
	w("kills serially with `kill -TERM; sleep 1; kill -KILL`, so its time grows by a second per agent.\n\n")
	w("| reaper | agents | fork spread | all signalled | all dead | per-agent lateness p50 / p99 / max |\n|---|---|---|---|---|---|\n")
	scenario("burst", nil, func(r result) {
		if r.s("reaper") == "seed" {
			w("| seed job (`node process-reaper.js`) | %.0f | – | %s | – | – (serial) |\n", r.f("agents"), ms(r.f("all_signalled_ms")))
			if a := r.f("agents"); a > 0 {
				w("| seed job, 1,000 agents by the same arithmetic | 1000 | – | %s | – | – |\n", ms(r.f("all_signalled_ms")/a*1000))
			}
			return
		}
		w("| daemon | %.0f | %s | %s | %s | %s / %s / %s |\n", r.f("agents"), ms(r.f("fork_spread_ms")), ms(r.f("all_signalled_ms")),
			ms(r.f("all_dead_ms")), ms(r.f("lateness_p50_ms")), ms(r.f("lateness_p99_ms")), ms(r.f("lateness_max_ms")))
		if r.f("agents") >= 1000 {
			ok := r.f("lateness_max_ms") <= 20 && r.f("all_signalled_ms")-r.f("fork_spread_ms") <= 20
			targets = append(targets, [3]string{"1,000-agent burst all signalled within 20 ms of the deadline",
				fmt.Sprintf("last %s after its deadline; all within %s of the first deadline (forks spread over %s)",
					ms(r.f("lateness_max_ms")), ms(r.f("all_signalled_ms")), ms(r.f("fork_spread_ms"))), verdict(ok)})
		}
	})

	// Mass kill.
	scenario("masskill", func(result) {
		w("\n### Mass kill\n\nTERM-ignoring agents cloned at once by a C helper, all due together (a restart after downtime, ")
		w("a resume from suspend): SIGTERM at the deadline, SIGKILL after the grace period. \"All signalled\" and \"all gone\" are from the first deadline ")
		w("(gone: the helper reaped the last one). Threads (`/proc/PID/status`) and descriptors (`/proc/PID/fd`) of the daemon, sampled every 20 ms. ")
		w("Every kill waits on its pidfds through one epoll loop and on the table through a condition: no thread per kill in flight.\n\n")
		w("| agents | grace | fork spread | all signalled | lateness p50 / p99 / max | all gone | threads at start / peak | peak fds | early |\n|---|---|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		w("| %.0f | %s | %s | %s | %s / %s / %s | %s | %.0f / %.0f | %.0f | %.0f |\n", r.f("agents"), ms(r.f("grace_ms")), ms(r.f("fork_spread_ms")),
			ms(r.f("all_signalled_ms")), ms(r.f("lateness_p50_ms")), ms(r.f("lateness_p99_ms")), ms(r.f("lateness_max_ms")),
			ms(r.f("all_gone_ms")), r.f("threads_start"), r.f("threads_peak"), r.f("fds_peak"), r.f("early"))
		if r.f("agents") >= 5000 {
			ok := r.f("threads_peak") <= 64 && r.f("early") == 0 && r.f("exited") == r.f("agents") &&
				r.f("all_gone_ms") <= r.f("grace_ms")+r.f("fork_spread_ms")+5000
			targets = append(targets, [3]string{"5,000 agents due together: all gone within grace + 5 s, threads ≤ 64",
				fmt.Sprintf("all gone after %s (grace %s), peak %.0f threads", ms(r.f("all_gone_ms")), ms(r.f("grace_ms")), r.f("threads_peak")), verdict(ok)})
		}
	})

	// 3. Event path.
	w("\n## 3. Event path\n\n")
	w("Go benchmarks (one core): decoding a `proc_event` and updating the table for a fork/exit cycle, no socket.\n\n```\n")
	var evPerS float64
	allocs := -1.0
	for _, l := range strings.Split(string(gb), "\n") {
		if strings.HasPrefix(l, "Benchmark") && !isTopBench(l) {
			w("%s\n", l)
		}
		if strings.HasPrefix(l, "BenchmarkDecodeApply") {
			evPerS = metric(l, "events/s")
			allocs = metric(l, "allocs/op")
		}
	}
	w("```\n\n")
	targets = append(targets, [3]string{"decode + table update ≥ 2 M events/s per core, 0 allocs/op",
		fmt.Sprintf("%.1f M events/s, %.0f allocs/op", evPerS/1e6, allocs), verdict(evPerS >= 2e6 && allocs == 0)})
	w("End to end: the fastest fork storm two C forkers make (fork + exit, no exec), the daemon and `forkstat` ")
	w("(Debian's package, printing every event) listening to the same storm; agents started during it must all be killed.\n\n")
	w("| seconds | forks | forks/s | daemon fork events | daemon lost | resyncs | forkstat fork events | agents missed |\n|---|---|---|---|---|---|---|---|\n")
	scenario("throughput", nil, func(r result) {
		fsEv := "–"
		if v, ok := r["forkstat_fork_events"]; ok {
			fsEv = fmt.Sprintf("%.0f (%.1f%% of forks)", v, 100*v.(float64)/r.f("forks"))
		}
		w("| %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %.0f of %.0f |\n", r.f("seconds"), r.f("forks"), r.f("forks_per_s"),
			r.f("fork_events"), r.f("events_lost"), r.f("resyncs"), fsEv, r.f("missed"), r.f("agents"))
		targets = append(targets, [3]string{"0 early, 0 missed at the fastest fork storm; loss recovered by resync",
			fmt.Sprintf("%.0f forks/s: %.0f lost, %.0f missed", r.f("forks_per_s"), r.f("events_lost"), r.f("missed")),
			verdict(r.f("missed") == 0)})
	})

	// 4. Cost.
	w("\n## 4. Cost\n\nThe daemon with many processes held by a C helper: start-up scan and first snapshot (from its log), ")
	w("CPU (utime + stime from `/proc/PID/stat`) idle and during the shell storm, RSS.\n\n")
	w("| processes tracked | start-up scan | snapshot | idle CPU | storm CPU | RSS idle | RSS storm |\n|---|---|---|---|---|---|---|\n")
	scenario("cost", nil, func(r result) {
		w("| %.0f | %s | %s | %.2f %% | %.1f %% | %.1f MB | %.1f MB |\n", r.f("processes_tracked"), ms(r.f("scan_ms")), ms(r.f("snapshot_ms")),
			r.f("idle_cpu_pct"), r.f("storm_cpu_pct"), r.f("rss_mb"), r.f("rss_storm_mb"))
		if r.f("processes_held") >= 10000 {
			targets = append(targets,
				[3]string{"idle CPU ≤ 0.1 % of a core", fmt.Sprintf("%.2f %% at %.0f processes", r.f("idle_cpu_pct"), r.f("processes_tracked")), verdict(r.f("idle_cpu_pct") <= 0.1+1e-9)},
				[3]string{"RSS ≤ 30 MB at 10,000 tracked processes", fmt.Sprintf("%.1f MB", r.f("rss_mb")), verdict(r.f("rss_mb") <= 30)},
				[3]string{"start-up scan ≤ 100 ms at 10,000", ms(r.f("scan_ms")), verdict(r.f("scan_ms") <= 100)})
		}
	})
	w("\nCPU is read from `/proc/PID/stat` in clock ticks (10 ms), over 30 s windows in a full run: one tick is 0.03 %%.\n")

	// 5. Outage.
	w("\n## 5. Outage\n\n")
	for _, l := range strings.Split(string(gb), "\n") {
		if strings.HasPrefix(l, "BenchmarkSpoolAppend") {
			w("Spooling while PostgreSQL is away (one write and one fsync per row): %.0f rows/s.\n\n", metric(l, "rows/s"))
		}
	}
	scenario("replay", nil, func(r result) {
		w("Replay when it returns: %.0f rows delivered in %.2f s (%.0f rows/s), batches of 500 per transaction.\n", r.f("rows"), r.f("seconds"), r.f("rows_per_s"))
	})

	// 6. Sessions and leftovers.
	scenario("leftover_lateness", func(r result) {
		w("\n## 6. Sessions and leftovers\n\n")
		w("Leftover kill lateness: sessions of an agent and one TERM-ignoring child, forked by a C helper; the agents are ended one after another, ")
		w("%s apart, and each child is killed as a leftover when the grace has passed since its agent's exit. ", ms(r.f("stagger_ms")))
		w("Lateness is the first signal minus the leftover's deadline (the agent's exit event + the grace, from the kill line). ")
		w("\"Early\" counts signals before that deadline or before the helper sent the agent its fatal signal + the grace (a bound that does not rely on the daemon's clock reading). ")
		w("\"Storm\" is the shell fork storm of section 1.\n\n")
		w("| load | sessions | grace | forks/s | kills (SIGKILLed) | lateness p50 | p99 | max | early |\n|---|---|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		w("| %s | %.0f | %s | %.0f | %.0f (%.0f) | %s | %s | %s | %.0f |\n", r.s("mode"), r.f("sessions"), ms(r.f("grace_ms")), r.f("forks_per_s"),
			r.f("kills"), r.f("killed"), ms(r.f("lateness_p50_ms")), ms(r.f("lateness_p99_ms")), ms(r.f("lateness_max_ms")), r.f("early"))
		if r.f("sessions") >= 100 {
			targets = append(targets, [3]string{fmt.Sprintf("leftovers (%s): none killed before agent exit + grace, all killed", r.s("mode")),
				fmt.Sprintf("%.0f early, %.0f of %.0f killed, max %s late", r.f("early"), r.f("kills"), r.f("sessions"), ms(r.f("lateness_max_ms"))),
				verdict(r.f("early") == 0 && r.f("kills") == r.f("sessions"))})
		}
	})
	scenario("lineage_cost", func(result) {
		w("\nCost of lineage tracking: the same idle process tree (agents × children, forked while the daemon runs, so lineage comes from fork events) ")
		w("under an agent name (every process a session member) and under a name that is no agent (no session). ")
		w("Settle: from the fork of the first process until /healthz counts them all; settle CPU: the daemon's CPU from the first fork until 2 s after settling (fork events, matching, persisting). ")
		w("Idle CPU over the idle window as in section 4, with the machine's other forks in that window (the daemon sees every fork on the host); ")
		w("the state file is `sessions.json` in the state dir after the membership was persisted.\n\n")
		w("| processes | sessions | members | settle | settle CPU | idle CPU | other forks/s | RSS | state file |\n|---|---|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		sess, members := "none", "0"
		if r.s("mode") == "sessions" {
			sess = fmt.Sprintf("%.0f", r.f("agents"))
			members = fmt.Sprintf("%.0f", r.f("processes_held"))
		}
		w("| %.0f | %s | %s | %s | %.2f s | %.2f %% | %.0f | %.1f MB | %.0f kB |\n", r.f("processes_held"), sess, members, ms(r.f("settle_ms")),
			r.f("settle_cpu_s"), r.f("idle_cpu_pct"), r.f("background_forks_per_s"), r.f("rss_mb"), r.f("state_bytes")/1024)
		if r.s("mode") == "sessions" && r.f("processes_held") >= 10000 {
			targets = append(targets, [3]string{"10,000 session members: idle CPU ≤ 0.1 %, RSS ≤ 30 MB",
				fmt.Sprintf("%.2f %%, %.1f MB", r.f("idle_cpu_pct"), r.f("rss_mb")), verdict(r.f("idle_cpu_pct") <= 0.1+1e-9 && r.f("rss_mb") <= 30)})
		}
	})

	// 7. Init mode.
	tini := false
	var initCPU, initRSS []float64
	var tiniCPU float64
	initRows := scenario("init_cost", func(result) {
		w("\n## 7. Init mode\n\n")
		w("`supervisor init` as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`, a container's entrypoint), ")
		w("against tini in the same place, in the same run. CMD is a shell that idles, then runs a C helper making short-lived orphans ")
		w("(double forks whose grandchild exits once reparented) at a fixed rate, which the init must reap. ")
		w("CPU is the init's utime + stime (`/proc/PID/stat`, 10 ms ticks) over the window; RSS from the same line, peak from `VmHWM`. ")
		w("The supervisor runs its whole daemon there (/proc polling every second, health snapshots, spool) with `--log-level info`; ")
		w("zombies left: orphans of PID 1 still zombies or alive when the storm is over (the helper waits up to 10 s for none; must be 0). ")
		w("`supervisor` is the binary the tests run (cgo, the machine's glibc); `supervisor-static` the static one `scripts/image` puts in the image. ")
		w("RSS anon / file: `RssAnon` (heap, stacks) and `RssFile` (the binary's pages mapped) of `/proc/PID/status` at the storm's end.\n\n")
		w("| init | idle CPU | storm: orphans/s | storm CPU | CPU per 1,000 orphans | RSS idle | RSS storm | anon / file | peak RSS | zombies left |\n|---|---|---|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		tini = tini || r.s("init") == "tini"
		w("| %s | %.2f %% | %.0f (%.0f in %.1f s) | %.1f %% | %s | %.1f MB | %.1f MB | %.1f / %.1f MB | %.1f MB | %.0f |\n", r.s("init"), r.f("idle_cpu_pct"),
			r.f("orphans_per_s"), r.f("orphans"), r.f("storm_s"), r.f("storm_cpu_pct"), ms(r.f("cpu_ms_per_1000_orphans")),
			r.f("rss_idle_mb"), r.f("rss_storm_mb"), r.f("rss_anon_storm_mb"), r.f("rss_file_storm_mb"), r.f("rss_peak_mb"), r.f("zombies_left"))
		switch r.s("init") {
		case "supervisor":
			if r.f("orphans") >= 1000 {
				targets = append(targets, [3]string{"init mode: no zombie left after an orphan storm",
					fmt.Sprintf("%.0f left after %.0f orphans", r.f("zombies_left"), r.f("orphans")), verdict(r.f("zombies_left") == 0)})
			}
			initCPU = append(initCPU, r.f("cpu_ms_per_1000_orphans"))
			initRSS = append(initRSS, max(r.f("rss_idle_mb"), r.f("rss_storm_mb")))
		case "supervisor-static":
			initCPU = append(initCPU, r.f("cpu_ms_per_1000_orphans"))
			initRSS = append(initRSS, max(r.f("rss_idle_mb"), r.f("rss_storm_mb")))
		case "tini":
			tiniCPU = r.f("cpu_ms_per_1000_orphans")
		}
	})
	if len(initCPU) > 0 && tiniCPU > 0 {
		worst := slices.Max(initCPU)
		targets = append(targets, [3]string{"init mode: CPU per 1,000 reaped orphans ≤ 3 × tini's",
			fmt.Sprintf("%s vs tini's %s (%.1f ×)", ms(worst), ms(tiniCPU), worst/tiniCPU), verdict(worst <= 3*tiniCPU)})
	}
	if len(initRSS) > 0 {
		worst := slices.Max(initRSS)
		targets = append(targets, [3]string{"init mode: RSS ≤ 12 MB (idle and storm)", fmt.Sprintf("%.1f MB", worst), verdict(worst <= 12)})
	}
	if initRows > 0 && !tini {
		w("\ntini is not installed (`apt-get install tini` failed): no comparison in this run.\n")
	}
	if hf := readHyperfine(*hyperfinePath); len(hf) > 0 {
		w("\nStart and exit, side by side in the same run (`hyperfine -N --warmup 3`): each init as PID 1 of a fresh namespace ")
		w("(`unshare --pid --fork --mount-proc`) running `/bin/true` as CMD, from exec to exit. The supervisor starts its whole daemon ")
		w("(the initial /proc scan, the state dir, the API socket) and shuts it down when CMD has exited; user and system are CPU time.\n\n")
		w("| init | wall, mean ± σ | min | user | system |\n|---|---|---|---|---|\n")
		for _, r := range hf {
			w("| %s | %s ± %s | %s | %s | %s |\n", r.Command, ms(1000*r.Mean), ms(1000*r.Stddev), ms(1000*r.Min), ms(1000*r.User), ms(1000*r.System))
		}
	}

	// 8. Resource guard.
	resRows := 0
	for _, r := range rs {
		switch r.s("scenario") {
		case "resource_cost":
			if resRows == 0 {
				w("\n## 8. Resource guard\n\n")
			}
			if resRows == 0 || resRows == -1 {
				w("Sampling cost at the default `--resource-interval 2s`: the sampling thread's own CPU time per sample ")
				w("(`supervisor_resource_sample_cpu_seconds_total` / `supervisor_resource_samples_total`: CLOCK_THREAD_CPUTIME_ID around each sample, ")
				w("the table snapshot and every /proc read included), for sessions of C processes, every one a session member. ")
				w("Idle members are paused (their CPU clock never moves: the last statm figure is reused, statm re-read every 10 s); ")
				w("waking members wake every 500 ms for a few µs (under the 250 µs of CPU that makes a statm read); ")
				w("busy members burn 300 µs every 500 ms (every sample reads their statm). ")
				w("The daemon column is the whole process's CPU over the window (every thread, the members' own load on the machine around it): an upper bound.\n\n")
				w("| sessions | members | members are | per sample | sampling CPU | per member per sample | whole daemon |\n|---|---|---|---|---|---|---|\n")
				resRows = max(resRows, 0)
			}
			resRows++
			w("| %.0f | %.0f | %s | %.2f ms | %.3f %% of a core | %.2f µs | %.2f %% |\n", r.f("sessions"), r.f("members"), r.s("kind"),
				r.f("ms_per_sample"), r.f("cost_cpu_pct"), r.f("us_per_member"), r.f("daemon_cpu_pct"))
			if r.f("members") >= 2000 && r.f("members") < 5000 {
				targets = append(targets, [3]string{"resource sampling at 100 sessions × 20 members (" + r.s("kind") + "), every 2 s: < 0.5 % of a core",
					fmt.Sprintf("%.3f %%", r.f("cost_cpu_pct")), verdict(r.f("cost_cpu_pct") < 0.5)})
			}
		case "resource_latency":
			if resRows == 0 {
				w("\n## 8. Resource guard\n\n")
				resRows = -1
			}
			w("\nFrom crossing a limit to the first signal: %.0f sessions whose child touches 200 MB under `--session-max-memory 100MiB`, ", r.f("agents"))
			w("from the child's clock reading just before it starts touching (the crossing is later) to the SIGTERM in the kill line. ")
			w("Bounded by the interval (%s): p50 %s, p99 %s, max %s.\n", r.s("interval"), ms(r.f("p50_ms")), ms(r.f("p99_ms")), ms(r.f("max_ms")))
		}
	}

	// 9. Memory pressure (section 8 is the resource guard's sampling).
	scenario("pressure_latency", func(result) {
		w("\n## 9. Memory pressure\n\n")
		w("Time from a PSI trigger's wake-up to the first signal: sessions of memory holders of different sizes, real memory pressure from a 20 MiB memory cgroup ")
		w("re-reading a 30 MiB file written from inside it (the test rig), `--pressure-cooldown 0` so each trigger kills the next largest session. ")
		w("Latency is the kill line's `signalled_boot_ns` (the deadline thread's first signal) minus the trigger line's `woke_boot_ns` (read as poll(2) returned with POLLPRI): ")
		w("reading the pressure file, choosing over the last resource sample, queueing the kill, the deadline thread's wake-up. ")
		w("The kernel fires a trigger at most once per window; without CAP_SYS_RESOURCE the window must be a multiple of 2 s. ")
		w("In order: victims that were the largest session left.\n\n")
		w("| trigger | sessions | kills | in order | latency p50 | p99 | max | took |\n|---|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		w("| `%s` | %.0f | %.0f | %.0f | %s | %s | %s | %.1f s |\n", r.s("trigger"), r.f("sessions"), r.f("kills"), r.f("in_order"),
			ms(r.f("latency_p50_ms")), ms(r.f("latency_p99_ms")), ms(r.f("latency_max_ms")), r.f("took_s"))
		targets = append(targets, [3]string{"memory pressure: every session killed largest first, wake-up to first signal ≤ 10 ms",
			fmt.Sprintf("%.0f of %.0f in order, max %s", r.f("in_order"), r.f("sessions"), ms(r.f("latency_max_ms"))),
			verdict(r.f("in_order") == r.f("sessions") && r.f("kills") == r.f("sessions") && r.f("latency_max_ms") <= 10)})
	})

	// 10. supervisor top.
	scenario("top_cpu", func(result) {
		w("\n## 10. supervisor top\n\n")
		w("Go benchmarks (`internal/top`, one core): one 80×24 frame of 1,000 sessions (colour on), and a whole refresh at 1,000 sessions ")
		w("(decoding `/healthz` and `/agents`, filtering and sorting, the frame).\n\n```\n")
		for _, l := range strings.Split(string(gb), "\n") {
			if isTopBench(l) {
				w("%s\n", l)
			}
		}
		w("```\n\n")
		w("`supervisor top` in a real terminal (tmux, 120×40) against a real daemon holding 1,000 sessions (an agent and a child each, the forker's sessions mode): ")
		w("its CPU (utime + stime from `/proc/PID/stat`) over the window, its RSS, and the daemon's CPU over a window without `top` and one with it ")
		w("(what one `/healthz` and one `/agents` a second and one `/events` stream cost it).\n\n")
		w("Then one session is killed through the control socket: \"kill to screen\" is from its kill record (the daemon's kill line, logged just after the record is published on the event stream; the session's child ignores SIGTERM, so the record comes after the kill grace) ")
		w("to tmux's screen showing its row under Last kills, polled as fast as `tmux capture-pane` answers (an upper bound: it includes the stream, one frame and tmux).\n\n")
		w("| sessions | window | top CPU | top RSS | daemon CPU without top | with top | kill to screen |\n|---|---|---|---|---|---|---|\n")
	}, func(r result) {
		w("| %.0f | %.0f s | %.2f %% | %.1f MB | %.2f %% | %.2f %% | %s |\n", r.f("sessions"), r.f("window_s"), r.f("top_cpu_pct"), r.f("top_rss_mb"),
			r.f("daemon_cpu_pct_without"), r.f("daemon_cpu_pct_with"), ms(r.f("kill_to_screen_ms")))
		frame := -1.0
		for _, l := range strings.Split(string(gb), "\n") {
			if strings.HasPrefix(l, "BenchmarkFrame1000") {
				frame = metric(l, "ns/op") / 1e6
			}
		}
		if r.f("sessions") >= 1000 {
			targets = append(targets, [3]string{"supervisor top: a kill's row on screen within 100 ms of the kill",
				ms(r.f("kill_to_screen_ms")), verdict(r.f("kill_to_screen_ms") <= 100)})
			targets = append(targets, [3]string{"supervisor top at 1,000 sessions: ≤ 2 % of a core, a frame in < 20 ms",
				fmt.Sprintf("%.2f %%, a frame in %s", r.f("top_cpu_pct"), ms(frame)), verdict(r.f("top_cpu_pct") <= 2 && frame >= 0 && frame < 20)})
		}
	})

	w("\n## Targets\n\n| target | measured | |\n|---|---|---|\n")
	for _, t := range targets {
		w("| %s | %s | %s |\n", t[0], t[1], t[2])
	}
	soak := soakSection(rs, machine)
	if soak == "" {
		soak = oldSoak(*out) // a run without the soak keeps the last one's
	}
	if soak != "" {
		w("\n%s", soak)
	}
	if err := os.WriteFile(*out, []byte(md.String()), 0o644); err != nil {
		fatal(err)
	}
}

// isTopBench: a Go benchmark line of supervisor top's (section 10).
func isTopBench(l string) bool {
	return strings.HasPrefix(l, "BenchmarkFrame1000") || strings.HasPrefix(l, "BenchmarkRefresh1000")
}

func ms(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 1:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.3f ms", v)
	}
}

var numRe = regexp.MustCompile(`([0-9.e+]+) ([^\s]+)`)

// metric finds "VALUE UNIT" in a go test -bench line.
func metric(line, unit string) float64 {
	for _, m := range numRe.FindAllStringSubmatch(line, -1) {
		if m[2] == unit {
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
	}
	return -1
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	var kb float64
	fmt.Sscanf(string(b), "MemTotal: %f kB", &kb)
	return fmt.Sprintf("%.0f GiB RAM", math.Round(kb/(1<<20)))
}

type curve struct {
	name string
	xs   []float64
}

// plot draws the cumulative distribution of each curve's lateness on a log
// axis from 10 µs to 10 s.
func plot(cs []curve) string {
	const W, H, L, R, T, B = 760.0, 470.0, 60.0, 20.0, 30.0, 110.0
	lo, hi := math.Log10(0.01), math.Log10(10000)
	x := func(v float64) float64 {
		v = math.Max(v, 0.01)
		return L + (math.Log10(v)-lo)/(hi-lo)*(W-L-R)
	}
	y := func(p float64) float64 { return T + (1-p)*(H-T-B) }
	colors := []string{"#1b6ca8", "#6ab04c", "#e58e26", "#c0392b", "#8e44ad"}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="18" font-size="14">Signal lateness (time from deadline to first signal), cumulative</text>`+"\n", L)
	for e := -2; e <= 4; e++ {
		v := math.Pow(10, float64(e))
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`, x(v), T, x(v), H-B)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x(v), H-B+16, ms(v))
	}
	for _, p := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		fmt.Fprintf(&s, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n",
			L, y(p), W-R, y(p), L-6, y(p)+4, p*100)
	}
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" text-anchor="middle">lateness (log scale)</text>`+"\n", (L+W-R)/2, H-B+34)
	for i, c := range cs {
		xs := slices.Clone(c.xs)
		slices.Sort(xs)
		var pts []string
		for j, v := range xs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(v), y(float64(j)/float64(len(xs)))), fmt.Sprintf("%.1f,%.1f", x(v), y(float64(j+1)/float64(len(xs)))))
		}
		col := colors[i%len(colors)]
		fmt.Fprintf(&s, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		// The legend sits below the axis, in two columns, off the curves.
		lx, ly := L+float64(i%2)*330, H-B+55+float64(i/2)*18
		fmt.Fprintf(&s, `<rect x="%.0f" y="%.0f" width="12" height="3" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			lx, ly, col, lx+18, ly+5, c.name)
	}
	s.WriteString("</svg>\n")
	return s.String()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchreport:", err)
	os.Exit(1)
}

// hyperfineResult is a result of hyperfine's --export-json (seconds).
type hyperfineResult struct {
	Command string  `json:"command"`
	Mean    float64 `json:"mean"`
	Stddev  float64 `json:"stddev"`
	Min     float64 `json:"min"`
	User    float64 `json:"user"`
	System  float64 `json:"system"`
}

// readHyperfine reads hyperfine's JSON export at path; none if path is
// empty or unreadable.
func readHyperfine(path string) []hyperfineResult {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var v struct {
		Results []hyperfineResult `json:"results"`
	}
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	return v.Results
}
