// Package pressure runs the memory pressure policy (--pressure): a PSI
// trigger on the memory pressure file (psi.Locate chooses it, or
// --pressure-file names it) wakes a goroutine blocked in poll(2); each
// wake-up is counted (supervisor_pressure_events_total), psi.Policy kills
// at most one session — the largest by memory among those past
// --pressure-min-age and not exempt — and then only counts wake-ups until
// --pressure-cooldown has passed. The kernel does the watching: nothing
// here polls.
//
// The split with internal/psi: psi is the kernel interface (files,
// triggers) and the pure policy; this package is the running watch: it
// arms, disarms and re-arms the trigger (on a reload, or when a cgroup's
// file goes away), waits on it, and hands each wake-up to the policy.
//
// Dependencies come in through what Config holds: the candidates are the
// resource guard's last sample (Samples), kills go to the tracker (Table),
// a dry run reports through the guard (Reporter), wake-ups are published
// on the event stream (Publisher) — interfaces this package defines — and
// settings come as plain values (Settings, also what Reload takes). It may
// import psi, tracker, resource and events; nothing of the daemon's
// assembly (internal/daemon, internal/api, internal/cli, internal/config)
// and not the limits policy.
package pressure
