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
			w("`scripts/bench --soak [SESSIONS]` (apart from the rest: it runs for hours at full size). Measured on %s. ", machine)
			w("One daemon with PostgreSQL (fsync on) takes short sessions from a C helper, %.0f at a time: an agent renames itself to the agent name, forks three children ", r.f("concurrency"))
			w("and lives 10 ms – 1 s (uniform); past the 600 ms max age it is killed with its tree, ")
			w("and a fifth of the sessions leave their children behind, killed as leftovers after a 200 ms grace. ")
			w("Before: idle after start; warm: after the first twentieth of the sessions; end: as the last session started; after: idle again, every row delivered. ")
			w("RSS, descriptors from `/proc`; goroutines, table and session counts from `/metrics`. Lateness p99 of the first and last tenth of the kills by signal time, from `tel.agent_kills`.\n\n")
		}
		sample := func(k string) map[string]any { m, _ := r[k].(map[string]any); return m }
		w("%.0f sessions in %.0f s (%.0f sessions/s); kills made %.0f, rows delivered %.0f, pending %.0f; by reason and outcome: %s. ",
			r.f("sessions"), r.f("seconds"), r.f("sessions_per_s"), r.f("kills"), r.f("rows"), r.f("pending"), r.s("by_reason"))
		w("Leftovers missed (members still alive 5 s after the last agent's exit, killed by the helper): %.0f.\n\n", r.f("leftovers_missed"))
		w("| | RSS | descriptors | goroutines | processes tracked | agents | sessions | members | spool rows |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, k := range []string{"before", "warm", "end_of_load", "after"} {
			s := sample(k)
			f := func(n string) float64 { v, _ := s[n].(float64); return v }
			w("| %s | %.1f MB | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", strings.ReplaceAll(k, "_", " "), f("rss_kib")/1024, f("fds"), f("goroutines"),
				f("processes_tracked"), f("agents_tracked"), f("sessions"), f("session_members"), f("spool_rows"))
		}
		flat, _ := r["flat"].(bool)
		w("\nPeak RSS %.1f MB. Lateness p99: first tenth %s, last tenth %s. Descriptors, goroutines, table and sessions back within 10 %% of their start: %v.\n",
			r.f("peak_rss_kib")/1024, ms(r.f("lateness_p99_first_tenth_ms")), ms(r.f("lateness_p99_last_tenth_ms")), flat)
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
