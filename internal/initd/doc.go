// Package initd makes the supervisor the init of a container:
// `supervisor init -- CMD` runs CMD as its child and does what tini (and
// `docker run --init`) does, beside the daemon.
//
// # Reaping
//
// A process whose parent exits is reparented to the nearest ancestor that
// is a child subreaper, else to PID 1 of its PID namespace
// (find_new_reaper in kernel/exit.c), and stays a zombie until that process
// waits for it. So as PID 1 we reap every orphan of the namespace; when we
// are not PID 1 we mark ourselves a subreaper with
// prctl(PR_SET_CHILD_SUBREAPER) (prctl(2), Linux 3.4) so that CMD's orphans
// come to us instead of to the real PID 1.
//
// The daemon has children of its own that we must not reap: each --on-kill
// hook is started and waited for by os/exec (internal/hook), which needs
// the exit status, and keeps the exited shell unreaped on purpose until it
// has killed what the hook left in its process group. tini's
// waitpid(-1, ...) would steal them. Instead every round peeks with
// waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT), which reports an exited child
// without reaping it, and reaps that PID with wait4 only if os/exec does
// not own it. The hook runner registers its children with Own, which holds
// the registry's lock across the fork: a child os/exec has just started is
// either registered before the reaper can look it up, or the reaper waits
// for the lock. When the peeked child is owned, its owner reaps it within
// moments (os/exec's Wait); meanwhile the other exited children are found in
// /proc (state Z, our PID as parent) and reaped one by one, so an owned
// zombie never holds up the rest.
//
// The reaper sleeps in a blocking waitid(P_ALL, WEXITED|WNOWAIT), which the
// kernel wakes when a child has exited (as sigtimedwait wakes tini), and
// reaps until waitid reports no exited child: a storm of short-lived
// orphans leaves no zombie behind. In builds with cgo it is a pthread
// outside the Go scheduler (reaper.c, reaper_cgo.go), as the deadline
// thread is: it reaps the orphans itself and hands CMD's exit and owned
// children to Go, and SIGCHLD is left at its default action (discarded)
// while it runs, so no exit wakes a Go thread for a signal. Only while we
// have no child at all (waitid then fails with ECHILD at once) does it
// poll, every 20 ms, or sooner when a child of our own is started. Without
// cgo it is a goroutine (reapLoop), which SIGCHLD or a 1 s tick wakes
// while we have no child. Waiting for SIGCHLD through os/signal instead
// cost a hop through the runtime's signal goroutine and another thread's
// wake-up per exit. SIGCHLD is a standard signal: any number of exits while
// one is pending make one signal, which is why every wake-up reaps until
// nothing is left.
//
// Before a child is reaped its exit is reported (OnExit) while the zombie
// still holds the PID, so the process table can drop it at once
// (tracker.Table.Exited): polling /proc, the daemon would otherwise see a
// dead member as live until the next poll.
//
// # Signals
//
// The kernel does not deliver to PID 1 of a namespace a signal sent from
// inside it for which PID 1 has no handler (SIGNAL_UNKILLABLE and
// sig_task_ignored in kernel/signal.c; pid_namespaces(7)); SIGKILL and
// SIGSTOP from inside are never delivered. So init must handle what it
// wants to receive: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
// SIGWINCH are caught (signal.Notify, registered before CMD starts) and
// forwarded to CMD, or to CMD's process group with ForwardGroup (tini's
// -g). SIGHUP also reloads the daemon's configuration (the daemon's own
// SIGHUP handler receives it too).
//
// CMD runs in its own process group (setpgid(2) in the child), as under
// tini, so that a group signal reaches CMD and what it started and not us.
// When stdin is a terminal and our process group is its foreground group,
// CMD's group is made the foreground group (tcsetpgrp(3) in the child, as
// tini does): ^C and ^Z then go to CMD, and CMD can read the terminal.
// When we are not in the foreground (a background job, no terminal),
// taking the terminal would steal it from the shell: CMD stays in the
// background like us.
//
// A signal to CMD goes through a pidfd opened at fork (CLONE_PIDFD); a
// group signal is kill(2) of -PID while CMD is not yet reaped: its PID, and
// so its process group id, cannot be reused before (the same argument as
// internal/hook's killGroup). Every other process is signalled through a
// pidfd opened and then checked against the start time a /proc read gave,
// and never PID 1 (ourselves, in a namespace), our ancestors or kernel
// threads (reap.Guard).
//
// # The end
//
// When CMD exits, what is left is terminated: as PID 1 every other process
// of the namespace (/proc shows only ours when it is the namespace's own
// mount), as a subreaper every remaining descendant. Each gets SIGTERM
// (and SIGCONT, so a stopped one can act on it), processes forked meanwhile
// too; whatever is alive after the kill grace gets SIGKILL; the zombies are
// reaped. Processes os/exec owns (running hooks) and their descendants are
// left to the daemon's shutdown, which bounds them. Then Done is closed and
// the caller exits with CMD's status: its exit code, or 128 + the signal
// number if a signal killed it (the shell's convention, and tini's).
package initd
