// Package tracker keeps the daemon's table of live processes and the
// deadlines of the agents among them.
//
// Every process is keyed by PID and identified by PID plus start time, so a
// reused PID is a new process (pid_max is 32768 on small machines and PIDs
// wrap in seconds under a fork storm). The table is fed by proc connector
// events (Apply) and by /proc scans (Merge): at start, after the kernel
// reports lost events, and in polling mode.
//
// Only thread-group leaders are tracked: the kernel sends fork, comm and exit
// events per thread, and a thread's "parent" fields name the thread that
// created it, not a parent process.
//
// Agents are processes matching a Rule. Each gets a deadline of its own start
// plus the maximum age, computed from the kernel's start time (the fork
// event's CLOCK_MONOTONIC timestamp, or /proc/PID/stat starttime rounded up
// to the next clock tick), never from when the daemon first saw it: a daemon
// restart never extends an agent's life and a deadline is never early.
// Deadlines live in one min-heap (Deadlines) driven by a single timer.
//
// Agent status is sticky: a process's own renames and execs never take
// its deadline or its session away (table.go, matchLocked); only root
// does, by changing the rules or the scope (rejudge.go) or through the
// control socket (leases.go). /proc reads that fail for another reason
// than an exit are retried (procretry.go); so are kills that fail
// (retry.go).
//
// The Table keeps the entries, their tree and the sessions (table.go,
// sessions.go, and rejudge.go for what a reload does to sessions). Each
// other capability is a part with its own state and its own file: the
// agent rules and scope (agentRules, rules.go), keep marks (keeper,
// marks.go), root's leases and keeps (leaseBook, leases.go), kill orders
// now and again (killer, kills.go and retry.go), the limits checked at
// fork (limits, resources.go), /proc read retries (procRetries,
// procretry.go), exit tombstones (exitLog, exited.go), exit waiters
// (goneWaiters, gone.go) and notices (notifier, notify.go). A part gets
// what it needs of the others through a small interface it declares, and
// runs under the table's one lock (Table).
package tracker
