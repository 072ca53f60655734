// Package limits is the resource-limit policy: the Guard samples every
// session each --resource-interval (through a Sampler, resource.Sampler in
// the daemon) and kills at once, through the tracker's KillSession, a
// session that crosses --session-max-memory, --session-max-procs or
// --session-idle; in a dry run it reports each session and reason once (a
// "would kill session" line and a dry-run kill row) instead. It owns the
// sampling thread and its cost metrics, supervisor_session_memory_bytes,
// and the latest sample that /agents, the health snapshot and the pressure
// policy read (Latest, Memory).
//
// Dependencies come in through what Config holds: the tracker through the
// Table interface this package defines (*tracker.Table satisfies it), the
// limits as plain values (Settings, also what Reload takes), the kill rows
// through a callback and the metrics through a prometheus.Registerer. It
// may import tracker, resource and health (for the snapshot's type): not
// the reaper (a dry-run kill is reported as a DryRunKill) and nothing of the daemon's assembly (internal/daemon,
// internal/api, internal/cli, internal/config).
package limits
