package main

import (
	"fmt"
	"os"
	"strings"
)

// The soak (scripts/bench --soak) runs for an hour or more, apart from the
// rest of the suite: its section sits between these markers in
// BENCHMARKS.md, is rewritten by a soak run, and carried over unchanged by
// a run without one.
const (
	soakBegin = "<!-- soak -->"
	soakEnd   = "<!-- /soak -->"
)

// soakSection renders the soak results of rs ("" when there are none).
func soakSection(rs []result, machine string) string {
	var md strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&md, format, a...) }
	for _, r := range rs {
		if r.s("scenario") != "soak" {
			continue
		}
		if md.Len() == 0 {
			w("%s\n## 11. Soak: a long run stays flat\n\n", soakBegin)
			w("`scripts/bench --soak [SESSIONS]` (apart from the rest: it runs for hours at full size; `SUPERVISOR_SOAK_STOP_AT` ends it at a given time). Measured on %s. ", machine)
			w("One daemon with PostgreSQL (fsync on) takes short sessions from a C helper (niced, with all it starts), %.0f at a time: an agent exec'd under the agent name ", r.f("concurrency"))
			w("forks three members, each exec'ing a program of another name (no agents), and lives 10 ms – 1 s (uniform, none within 200 ms of the 600 ms max age); ")
			w("those past the max age are killed at it with their members; the others end on their own, and a fifth of these leave their members behind, ")
			w("which the leftovers policy must kill after its 200 ms grace. ")
			w("The generator counts what it made and saw (agents ended or killed, leftovers made and killed); the daemon's `/metrics` and `tel.agent_kills` what it did. ")
			w("Before: idle after start; warm: after the first twentieth of the sessions; end: as the last session started; after: idle again, every row delivered. ")
			w("RSS, descriptors from `/proc`; goroutines, table and session counts from `/metrics` (the table holds every process of the machine: it is compared with the processes in `/proc` at the same moment). ")
			w("Lateness p99 of the first and last tenth of the kills by signal time, from `tel.agent_kills`.\n\n")
		}
		sample := func(k string) map[string]any { m, _ := r[k].(map[string]any); return m }
		stopped := ""
		if req := r.f("requested"); req > r.f("sessions") {
			stopped = fmt.Sprintf(" (of %.0f asked for: stopped at its time)", req)
		}
		w("%.0f sessions%s in %.0f s (%.0f sessions/s), load average %s at the end. ", r.f("sessions"), stopped, r.f("seconds"), r.f("sessions_per_s"), r.s("load"))
		w("Generator: %.0f agents ended on their own, %.0f killed; %.0f leftovers made, %.0f killed, %.0f missed (alive 5 s after the last agent, killed by the generator). ",
			r.f("agents_exited"), r.f("agents_killed"), r.f("leftovers_made"), r.f("leftovers_reaped"), r.f("leftovers_missed"))
		w("Daemon: %.0f kills made (%.0f max age, %.0f leftover), %.0f rows delivered, %.0f pending; by reason and outcome: %s. ",
			r.f("kills"), r.f("max_age_kills"), r.f("leftover_kills"), r.f("rows"), r.f("pending"), r.s("by_reason"))
		w("Members killed at max age as agents (an agent's fork is one until its exec, seen too late): %.0f; agents killed more than 100 ms after their deadline (seen late): %.0f.\n\n",
			r.f("members_killed_as_agents"), r.f("agents_killed_over_100ms_late"))
		w("| | RSS | Go heap live / in use | descriptors | goroutines | processes tracked | in /proc | agents | sessions | members | spool rows |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, k := range []string{"before", "warm", "end_of_load", "after"} {
			s := sample(k)
			f := func(n string) float64 { v, _ := s[n].(float64); return v }
			heap := "–" // not sampled by runs before it was
			if _, ok := s["heap_inuse_bytes"]; ok {
				heap = fmt.Sprintf("%.1f / %.1f MB", f("heap_alloc_bytes")/(1<<20), f("heap_inuse_bytes")/(1<<20))
			}
			w("| %s | %.1f MB | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", strings.ReplaceAll(k, "_", " "), f("rss_kib")/1024, heap, f("fds"), f("goroutines"),
				f("processes_tracked"), f("processes_on_machine"), f("agents_tracked"), f("sessions"), f("session_members"), f("spool_rows"))
		}
		w("\nPeak RSS %.1f MB. Lateness p99: first tenth %s, last tenth %s.\n\n", r.f("peak_rss_kib")/1024,
			ms(r.f("lateness_p99_first_tenth_ms")), ms(r.f("lateness_p99_last_tenth_ms")))
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "**not met**"
		}
		b := func(k string) bool { v, _ := r[k].(bool); return v }
		before, after := sample("before"), sample("after")
		g := func(s map[string]any, n string) float64 { v, _ := s[n].(float64); return v }
		w("| target | measured | |\n|---|---|---|\n")
		w("| rows delivered = kills made, none pending | %.0f rows, %.0f kills, %.0f pending | %s |\n", r.f("rows"), r.f("kills"), r.f("pending"),
			verdict(r.f("rows") == r.f("kills") && r.f("pending") == 0))
		w("| agents killed = max-age kills | %.0f killed, %.0f kills | %s |\n", r.f("agents_killed"), r.f("max_age_kills"),
			verdict(r.f("agents_killed") == r.f("max_age_kills")))
		w("| leftovers killed = leftovers made = leftover kills, none missed | %.0f made, %.0f killed, %.0f kills, %.0f missed | %s |\n",
			r.f("leftovers_made"), r.f("leftovers_reaped"), r.f("leftover_kills"), r.f("leftovers_missed"),
			verdict(r.f("leftovers_made") == r.f("leftovers_reaped") && r.f("leftovers_made") == r.f("leftover_kills") && r.f("leftovers_missed") == 0))
		w("| descriptors, goroutines, table, sessions back within 10 %% of their start | descriptors %.0f → %.0f, goroutines %.0f → %.0f, table %.0f of %.0f in /proc, sessions %.0f | %s |\n",
			g(before, "fds"), g(after, "fds"), g(before, "goroutines"), g(after, "goroutines"), g(after, "processes_tracked"), g(after, "processes_on_machine"),
			g(after, "sessions"), verdict(b("flat")))
		w("| RSS back within 10 %% of its start | %.1f MB → %.1f MB | %s |\n", g(before, "rss_kib")/1024, g(after, "rss_kib")/1024, verdict(b("rss_flat")))
		w("| lateness p99 unchanged (last tenth ≤ 1.25 × the first, or + 1 ms) | %s → %s | %s |\n", ms(r.f("lateness_p99_first_tenth_ms")),
			ms(r.f("lateness_p99_last_tenth_ms")), verdict(b("lateness_flat")))
	}
	if md.Len() == 0 {
		return ""
	}
	return md.String() + soakEnd + "\n"
}

// oldSoak returns the soak section of the file at path, if it has one.
func oldSoak(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.Index(s, soakBegin), strings.Index(s, soakEnd)
	if i < 0 || j < i {
		return ""
	}
	return s[i:j+len(soakEnd)] + "\n"
}

// withSoak is doc (BENCHMARKS.md as it is) with its soak section replaced
// by section, or section appended.
func withSoak(doc, section string) string {
	i, j := strings.Index(doc, soakBegin), strings.Index(doc, soakEnd)
	if i >= 0 && j > i {
		rest := strings.TrimPrefix(doc[j+len(soakEnd):], "\n")
		return doc[:i] + section + rest
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + section
}
