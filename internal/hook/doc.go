// Package hook runs the operator's command after each finished kill
// (--on-kill): `/bin/sh -c CMD` with the kill record as one JSON object on
// stdin and the REAPER_EVENT_* variables in a minimal environment.
//
// A hook never delays or undoes a kill: Run only queues. At most
// Concurrency hooks run at once; up to QueueSize more wait, and beyond that
// a hook is dropped and counted. Each run is its own process group
// (setpgid(2)) with a timeout; when it passes, or when the hook's shell
// exits leaving processes behind, the group is killed with SIGKILL while
// the shell is still an unreaped zombie, so the group id cannot have been
// reused (a PID, and with it a process group id, is only freed once its
// zombie is reaped). Every child is waited for: no zombies.
//
// The environment is built from nothing, never inherited: the daemon's own
// may hold DATABASE_URL or other secrets.
package hook
