// Package health takes the periodic health snapshot: zombies and who holds
// them, memory as the host and (inside a container) the cgroup see it,
// pressure stall information, and the daemon's own state. Its Details keep
// every key of the seed job's tel.system_health rows (process-reaper.js)
// and add the new ones beside them.
package health
