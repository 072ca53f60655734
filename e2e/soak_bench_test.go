package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// soakSample is the daemon's footprint at one moment of the soak.
type soakSample struct {
	Sessions   int64   `json:"sessions_started"`
	RSSKiB     int64   `json:"rss_kib"`
	FDs        int     `json:"fds"`
	Goroutines float64 `json:"goroutines"`
	Procs      float64 `json:"processes_tracked"`
	Agents     float64 `json:"agents_tracked"`
	SessionsT  float64 `json:"sessions"`
	Members    float64 `json:"session_members"`
	Spool      float64 `json:"spool_rows"`
	Kills      float64 `json:"kills"`
	// FDKinds counts the descriptors by what they are (socket, pidfd,
	// eventpoll, a path, ...).
	FDKinds map[string]int `json:"fd_kinds"`
}

// fdKinds counts pid's descriptors by their link target, with numbers
// (socket:[123]) and paths under /proc left out.
func fdKinds(pid int) map[string]int {
	out := map[string]int{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.IndexAny(l, ":"); i > 0 && !strings.HasPrefix(l, "anon_inode:") {
			l = l[:i]
		}
		if strings.HasPrefix(l, "/proc/") {
			l = "/proc/..."
		}
		out[l]++
	}
	return out
}

func sampleSoak(b *testing.B, d *testDaemon, started int64) soakSample {
	pid := d.cmd.Process.Pid
	rss, _ := strconv.ParseInt(strings.Fields(procStatus(pid, "VmRSS") + " 0")[0], 10, 64)
	s := soakSample{Sessions: started, RSSKiB: rss, FDs: openFDs(pid), FDKinds: fdKinds(pid)}
	for _, l := range strings.Split(scrape(b, d), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || strings.HasPrefix(l, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		name, _, _ := strings.Cut(f[0], "{")
		switch name {
		case "go_goroutines":
			s.Goroutines = v
		case "supervisor_processes_tracked":
			s.Procs = v
		case "supervisor_agents_tracked":
			s.Agents = v
		case "supervisor_sessions":
			s.SessionsT = v
		case "supervisor_session_members":
			s.Members = v
		case "supervisor_db_spool_rows":
			s.Spool = v
		case "supervisor_kills_total":
			s.Kills += v
		}
	}
	return s
}

// BenchmarkIntegrationSoak: a long run through one daemon with a database.
// Sessions of an agent and three children (goroutines, descriptors, table
// and sessions must not end above their start + 10 %), each agent living 10 ms – 1 s
// (the forker's soak mode), 200 at a time: those past the 600 ms max age
// are killed at it, with their trees; a fifth leave their children behind,
// killed as leftovers after a 200 ms grace. The daemon's RSS, descriptors,
// goroutines and table and session counts are sampled idle before, at
// every twentieth of the sessions, and idle after; the lateness p99 of the
// first and last tenth of the kills (from tel.agent_kills); every kill's
// row delivered and none left pending. Sessions: 1,000 (smoke), 100,000
// (quick), 1,000,000 (full), or SUPERVISOR_SOAK_SESSIONS.
func BenchmarkIntegrationSoak(b *testing.B) {
	needRoot(b)
	n := int64(scale(1000, 100_000, 1_000_000))
	if v, err := strconv.ParseInt(os.Getenv("SUPERVISOR_SOAK_SESSIONS"), 10, 64); err == nil && v > 0 {
		n = v
	}
	const name = "soak-agent"
	const conc, maxAge, leftPct = 200, 600 * time.Millisecond, 20
	db, conn := testDB(b)
	host := "soak-" + strconv.Itoa(os.Getpid())
	for b.Loop() {
		// Its kill lines (hundreds of thousands) are left out of what the
		// harness keeps: a shell in front of the daemon execs it with
		// stderr through grep.
		d := startDaemonUnder(b, []string{"bash", "-c", `exec "$@" 2> >(exec grep --line-buffered -v '"msg":"kill"' >&2)`, "bash"}, nil,
			"--agent", name, "--max-age", maxAge.String(), "--kill-grace", "200ms",
			"--leftover-grace", "200ms", "--log-level", "info", "--summary-interval", "1h",
			"--database-url", db, "--host-id", host)
		// Idle: the footprint once the daemon has settled after start.
		waitFor(b, 30*time.Second, func() bool { return sampleSoak(b, d, 0).Goroutines > 0 }, "metrics")
		before := sampleSoak(b, d, 0)
		t0 := time.Now()
		gen := runAgent(b, exec.Command(forker(b), "soak", name, strconv.FormatInt(n, 10), strconv.Itoa(conc),
			"10", "1000", strconv.Itoa(leftPct), "1"))
		samples := []soakSample{before}
		for k := int64(1); k <= 20; k++ {
			line, ok := gen.out.take("progress ", time.Duration(n/20+1)*100*time.Millisecond+5*time.Minute)
			if !ok {
				b.Fatalf("the generator stalled after %d samples", k-1)
			}
			started, _ := strconv.ParseInt(strings.Fields(line.text)[1], 10, 64)
			samples = append(samples, sampleSoak(b, d, started))
		}
		done, ok := gen.out.take("done ", 5*time.Minute)
		if !ok {
			h := sampleSoak(b, d, n)
			b.Fatalf("the generator did not finish 5 minutes after its last session started: processes left alive (daemon: %+v)", h)
		}
		took := time.Since(t0)
		orphans, _ := strconv.ParseInt(strings.Fields(done.text)[2], 10, 64)
		missed, _ := strconv.ParseInt(strings.Fields(done.text)[3], 10, 64)

		// Idle again: every kill recorded, delivered, nothing in flight.
		var rows, pending int64
		var kills float64
		var after soakSample
		for end := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			after = sampleSoak(b, d, n)
			kills = after.Kills
			err := conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE outcome <> 'pending'),
				count(*) FILTER (WHERE outcome = 'pending') FROM tel.agent_kills WHERE host = $1`, host).Scan(&rows, &pending)
			if err == nil && after.Spool == 0 && after.Procs <= before.Procs && after.SessionsT <= before.SessionsT && float64(rows) >= kills {
				break
			}
			if time.Now().After(end) {
				b.Errorf("not idle 5 minutes after the last session: %+v; %d rows, %d pending, %.0f kills", after, rows, pending, kills)
				break
			}
		}
		samples = append(samples, after)
		var p99first, p99last float64
		var reasons string
		if err := conn.QueryRow(context.Background(), `WITH k AS (
				SELECT lateness_ms, ntile(10) OVER (ORDER BY signalled_at) AS tenth FROM tel.agent_kills
				WHERE host = $1 AND outcome <> 'pending' AND outcome <> 'already_gone')
			SELECT coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness_ms) FILTER (WHERE tenth = 1), 0),
				coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness_ms) FILTER (WHERE tenth = 10), 0) FROM k`,
			host).Scan(&p99first, &p99last); err != nil {
			b.Fatal(err)
		}
		if err := conn.QueryRow(context.Background(), `SELECT string_agg(reason || ' ' || outcome || ' ' || c, ', ' ORDER BY c DESC)
			FROM (SELECT reason, outcome, count(*) c FROM tel.agent_kills WHERE host = $1 GROUP BY 1, 2) x`, host).Scan(&reasons); err != nil {
			b.Fatal(err)
		}
		d.stop(b)

		within := func(a, b float64) bool { return b <= a*1.1+1 }
		flat := within(float64(before.FDs), float64(after.FDs)) && within(before.Goroutines, after.Goroutines) &&
			within(before.Procs, after.Procs) && within(before.SessionsT, after.SessionsT) && within(before.Members, after.Members)
		peakRSS := int64(0)
		for _, s := range samples {
			peakRSS = max(peakRSS, s.RSSKiB)
		}
		record(b, "soak", map[string]any{"sessions": n, "concurrency": conc, "seconds": took.Seconds(),
			"sessions_per_s": float64(n) / took.Seconds(), "kills": kills, "rows": rows, "pending": pending,
			"leftovers_reaped_by_generator": orphans, "leftovers_missed": missed, "by_reason": reasons,
			"lateness_p99_first_tenth_ms": p99first, "lateness_p99_last_tenth_ms": p99last,
			"before": before, "warm": samples[1], "end_of_load": samples[20], "after": after, "peak_rss_kib": peakRSS,
			"flat": flat})
		b.ReportMetric(float64(n)/took.Seconds(), "sessions/s")
		b.ReportMetric(p99first, "late-p99-first-ms")
		b.ReportMetric(p99last, "late-p99-last-ms")
		fmt.Fprintf(os.Stderr, "soak: %d sessions in %s (%.0f/s); kills %.0f, rows %d, pending %d, leftovers missed %d; %s\n  before %+v\n  warm   %+v\n  end    %+v\n  after  %+v\n  p99 lateness first tenth %.2f ms, last tenth %.2f ms\n",
			n, took.Round(time.Second), float64(n)/took.Seconds(), kills, rows, pending, missed, reasons, before, samples[1], samples[20], after, p99first, p99last)
		if missed > 0 {
			// Found by this benchmark, not fixed here: members of a session
			// whose agent lived only a few ms are sometimes no leftovers.
			b.Logf("%d members outlived their agent by 5 s without being killed as leftovers (the generator killed them)", missed)
			if !scale(true, false, false) {
				b.Errorf("%d leftovers missed", missed)
			}
		}
		if float64(rows) != kills || pending != 0 {
			b.Errorf("%d rows delivered (%d pending) for %.0f kills made", rows, pending, kills)
		}
		if scale(true, false, false) {
			continue // the smoke: rows and kills only; the footprint of so short a run is noise
		}
		if !flat {
			b.Errorf("descriptors, goroutines, table or sessions not back within 10%% of their start: before %+v, after %+v", before, after)
		}
		if !within(float64(before.RSSKiB), float64(after.RSSKiB)) && float64(after.RSSKiB) > float64(samples[1].RSSKiB)*1.1 {
			b.Errorf("RSS %d KiB after, %d KiB before and %d KiB warm: not back within 10%%", after.RSSKiB, before.RSSKiB, samples[1].RSSKiB)
		}
		if p99last > 2*p99first+1 {
			b.Errorf("lateness p99 grew from %.2f ms (first tenth) to %.2f ms (last tenth)", p99first, p99last)
		}
	}
}
