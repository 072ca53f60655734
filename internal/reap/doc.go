// Package reap kills stale agents and their process trees, by identity.
//
// Every signal goes through a pidfd (pidfd_open(2), Linux 5.3;
// pidfd_send_signal(2), Linux 5.1) opened for a PID and then checked against
// the start time the tracker recorded, so a signal can never reach a process
// that reused the PID. The protocol: SIGCONT and SIGTERM to the agent and
// every descendant in the table (stopped processes cannot act on SIGTERM),
// wait the grace period for the pidfds to report exits (a pidfd becomes
// readable when its process exits; one epoll loop watches them all) while
// terminating descendants forked meanwhile, then SIGKILL whatever remains,
// parents first, until the tree is empty. Agents due at the same instant are
// reaped concurrently, each by a goroutine that blocks only on channels and
// Go timers, so thousands in flight cost a handful of threads. A signal the
// kernel refuses (EPERM) makes the outcome failed.
//
// Descriptors are budgeted (Pins): an agent found while the daemon holds
// many is queued without a pidfd and pinned, its start time checked again,
// when it is due.
//
// PID 1, the daemon itself, its ancestors and kernel threads are never
// signalled, whatever the table says.
package reap
