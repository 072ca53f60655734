//go:build linux

package initd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Procs reads /proc: one process, or all of them.
type Procs interface {
	Stat(pid int32) (tracker.ProcInfo, error)
	Scan() ([]tracker.ProcInfo, error)
}

// Config configures Start.
type Config struct {
	Argv    []string // CMD and its arguments; Argv[0] is looked up in PATH
	Env     []string // nil: ours
	Forward Forward
	// Grace is the time between SIGTERM and SIGKILL for what is left when
	// CMD exits, read then (a reload may have changed it).
	Grace func() time.Duration
	Procs Procs
	Log   *zap.Logger
	// Root is the procfs mount (default /proc): it must be our PID
	// namespace's own for PIDs read there to be ours.
	Root string
}

// Stats are init's counters.
type Stats struct {
	Reaped     uint64 // children reaped, CMD included
	Forwarded  uint64 // signals passed on to CMD
	Terminated uint64 // processes signalled when CMD exited
}

// Init is a running init: CMD, the reaper and the forwarder.
type Init struct {
	cfg   Config
	log   *zap.Logger
	guard *reap.Guard
	self  int  // our PID, which is also the PID /proc shows for us when ownProc
	pid1  bool // PID 1 of our namespace: every process we see is ours to end
	// ownProc: the procfs is our namespace's, so PIDs read there are
	// PIDs we can signal and wait for. Otherwise nothing is read there.
	ownProc bool

	cmdPID int
	cmdFD  int // pidfd of CMD, from CLONE_PIDFD

	// fwdMu orders forwarding against reaping CMD: a group signal goes to
	// -PID only while CMD is unreaped (its PID, the group id, is then
	// still ours).
	fwdMu     sync.Mutex
	cmdReaped bool
	status    int

	mu    sync.Mutex
	owned map[int]chan struct{} // children os/exec waits for (Own)

	onExit atomic.Pointer[func(pid int32)]
	rp     *reaper // the reaper thread (reaper_cgo.go), or reapLoop

	chld, fwd  chan os.Signal
	tty        chan os.Signal // SIGTTIN, SIGTTOU: caught and dropped
	cmdExited  chan struct{}  // CMD reaped
	done       chan struct{}  // CMD reaped and what it left ended
	stop       chan struct{}
	loops      sync.WaitGroup // the forwarder (the reaper is not waited for: reapLoop)
	reapMu     sync.Mutex     // held while reaping: Close takes it, and nothing is reaped after
	stopOnce   sync.Once
	reaped     atomic.Uint64
	forwarded  atomic.Uint64
	terminated atomic.Uint64
}

// Start catches the forwarded signals and SIGCHLD, becomes a child
// subreaper unless it is PID 1, starts CMD and the loops that reap and
// forward. A CMD that cannot be started is an error (StartCode gives the
// exit status); nothing is left running then.
func Start(cfg Config) (*Init, error) {
	if err := cmdlineArgs(cfg.Argv); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Grace == nil {
		cfg.Grace = func() time.Duration { return 5 * time.Second }
	}
	if cfg.Root == "" {
		cfg.Root = "/proc"
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	path, err := exec.LookPath(cfg.Argv[0])
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			err = fmt.Errorf("%w: %w", errNotFound, err)
		}
		return nil, &StartError{Err: fmt.Errorf("command %q: %w", cfg.Argv[0], err)}
	}
	in := &Init{cfg: cfg, log: cfg.Log, self: os.Getpid(), owned: map[int]chan struct{}{},
		chld: make(chan os.Signal, 1), fwd: early, tty: make(chan os.Signal, 1),
		cmdExited: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{}), cmdFD: -1}
	in.pid1 = in.self == 1
	// /proc/self names us by the PID the procfs's namespace gives us: ours
	// only when it is our namespace's mount (unshare --mount-proc, a
	// container's own /proc).
	if s, err := os.Readlink(cfg.Root + "/self"); err == nil {
		in.ownProc = s == strconv.Itoa(in.self)
	}
	if !in.ownProc {
		in.log.Warn("/proc is not this PID namespace's own mount: leftovers are not looked for there when the command exits (mount a fresh /proc, e.g. unshare --mount-proc)")
	}
	if in.guard, err = reap.NewGuard(cfg.Procs); err != nil && in.ownProc {
		return nil, err
	}

	// Caught before CMD exists: nothing it or its children do is missed.
	// The forwarded signals have room for a burst. (SIGCHLD is caught only
	// while there is no child to wait for: reapLoop. It coalesces, so one
	// slot is enough: every wake-up reaps until nothing is left.)
	signal.Notify(in.fwd, Forwarded...)
	if !in.pid1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			in.stopSignals()
			return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
		}
	}

	sys := &syscall.SysProcAttr{Setpgid: true, PidFD: &in.cmdFD}
	if foreground() {
		sys.Foreground, sys.Ctty = true, 0
	}
	in.cmdPID, err = syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{
		Env: cfg.Env, Files: []uintptr{0, 1, 2}, Sys: sys,
	})
	if err != nil {
		in.stopSignals()
		return nil, &StartError{Err: fmt.Errorf("start %q: %w", path, err)}
	}
	if sys.Foreground {
		// Now in the background of the terminal, our own writes to it
		// (the log on stderr) would stop us with SIGTTOU under `stty
		// tostop`, and Go leaves SIGTTOU at its default action unless it
		// is caught. Caught and dropped (tini ignores them; an ignored
		// signal would stay ignored in every child we start later, the
		// --on-kill hooks; a caught one is reset by exec).
		signal.Notify(in.tty, unix.SIGTTIN, unix.SIGTTOU)
	}
	in.log.Info("command started", zap.Int("pid", in.cmdPID), zap.Strings("argv", cfg.Argv),
		zap.Bool("pid1", in.pid1), zap.Bool("foreground", sys.Foreground), zap.Stringer("forward_to", cfg.Forward))
	if in.rp, err = startReaper(in); err != nil {
		in.log.Warn("reaping from a goroutine instead", zap.Error(err))
		in.rp = &reaper{}
		go in.reapLoop()
	}
	in.loops.Add(1)
	go in.forwardLoop()
	return in, nil
}

// foreground reports whether stdin is a terminal whose foreground process
// group is ours: then CMD's group takes it over.
func foreground() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP) // ENOTTY: not our controlling terminal
	return err == nil && pgrp == unix.Getpgrp()
}

// PID is CMD's PID.
func (in *Init) PID() int { return in.cmdPID }

// Exited is closed when CMD has been reaped.
func (in *Init) Exited() <-chan struct{} { return in.cmdExited }

// Done is closed when CMD has exited and everything it left has been
// ended and reaped.
func (in *Init) Done() <-chan struct{} { return in.done }

// Status is CMD's exit status (ExitCode), once Exited is closed.
func (in *Init) Status() int {
	in.fwdMu.Lock()
	defer in.fwdMu.Unlock()
	return in.status
}

// Stats returns the counters.
func (in *Init) Stats() Stats {
	return Stats{Reaped: in.reaped.Load() + in.rp.reaped(), Forwarded: in.forwarded.Load(), Terminated: in.terminated.Load()}
}

// SetOnExit sets f to be told of each child's exit before it is reaped
// (the zombie still holds its PID); nil: no one.
func (in *Init) SetOnExit(f func(pid int32)) {
	if f == nil {
		in.onExit.Store(nil)
	} else {
		in.onExit.Store(&f)
	}
	in.rp.report(f != nil)
}

// Close stops the loops and gives the signals back to their defaults. Call
// it last: nothing is reaped after it.
func (in *Init) Close() {
	in.stopOnce.Do(func() {
		close(in.stop)
		in.loops.Wait()
		// The reaper may be asleep in waitid (reapLoop): it is not waited
		// for, but once this lock is ours it reaps nothing more.
		in.reapMu.Lock()
		defer in.reapMu.Unlock()
		in.rp.stop()
		in.stopSignals()
		if in.cmdFD >= 0 {
			unix.Close(in.cmdFD)
		}
	})
}

// early receives the forwarded signals from CatchEarly on, so that one
// sent while the configuration is still being read is forwarded once CMD
// runs, not lost.
var early = make(chan os.Signal, 64)

// CatchEarly installs the handlers for the forwarded signals at once. Call
// it first thing in init mode: until a Go program catches SIGTERM, the
// runtime's default action re-raises it, which PID 1 of a namespace ignores
// (the kernel drops signals to a namespace's init that it has no handler
// for), and the runtime then exits 2 — CMD dies with the namespace, without
// its signal or a grace. A signal in the microseconds before this call is
// still lost, as under tini.
func CatchEarly() { signal.Notify(early, Forwarded...) }

func (in *Init) stopSignals() {
	signal.Stop(in.chld)
	signal.Stop(in.fwd)
	signal.Stop(in.tty)
}

// Own runs start, which starts a child and returns its PID, and registers
// the child as one the reaper leaves to its owner until Disown. The lock is
// held across the fork, so the reaper cannot see the child unregistered.
func (in *Init) Own(start func() (int, error)) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.rp.ownBegin() // the reaper thread's own registry (reaper_cgo.go)
	pid, err := start()
	if err != nil {
		in.rp.ownEnd(0)
		return err
	}
	in.owned[pid] = make(chan struct{})
	in.rp.ownEnd(pid)
	return nil
}

// Disown ends the registration of pid, once its owner has reaped it.
func (in *Init) Disown(pid int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if ch, ok := in.owned[pid]; ok {
		close(ch)
		delete(in.owned, pid)
		in.rp.disown(pid)
	}
}

// ownedBy returns the channel closed when pid is disowned, or nil if no one
// owns it.
func (in *Init) ownedBy(pid int) chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.owned[pid]
}

// reapLoop, in builds without cgo (reaper_nocgo.go; with cgo a pthread
// does this, reaper_cgo.go), reaps after a blocking waitid(2), which the kernel wakes when a
// child has exited (as sigtimedwait wakes tini). (Waking on SIGCHLD through
// os/signal took a hop through the runtime's signal goroutine and another
// thread's wake-up per exit: most of init's CPU in an orphan storm.) Only
// while there is no child at all, when waitid does not block, SIGCHLD and
// a 1 s tick wake it. The goroutine is not locked to its thread: a locked
// one whose processor was handed off during the wait costs two threads'
// wake-ups to resume (measured: more CPU per orphan, not less).
//
// The loop may stay asleep in waitid after Close, while children are left
// (Close cannot interrupt the call; the process exits soon after); once
// stop is closed it reaps nothing more (reapMu).
func (in *Init) reapLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if !in.reapAll() {
			return
		}
		err := waitExited()
		switch {
		case err == nil:
			// An exited child: reaped at the top. (An owned one that its
			// owner has not reaped yet is waited for there.)
		case errors.Is(err, unix.ECHILD):
			// No child: until one exists waitid cannot sleep. SIGCHLD
			// (an orphan reparented to us that exits, a command os/exec
			// starts and that exits) or the tick wakes us meanwhile.
			signal.Notify(in.chld, unix.SIGCHLD)
			if _, err := peek(); errors.Is(err, unix.ECHILD) {
				select {
				case <-in.stop:
				case <-in.chld:
				case <-tick.C:
				}
			}
			signal.Stop(in.chld)
		default:
			in.log.Error("waitid", zap.Error(err))
			select {
			case <-in.stop:
			case <-tick.C:
			}
		}
	}
}

// waitExited sleeps until a child has exited (without reaping it), or
// returns an error: ECHILD when there is no child at all.
func waitExited() error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// unionOffset is where siginfo_t's union starts: after si_signo, si_errno
// and si_code, aligned for the pointers the union holds.
var unionOffset = (3*unsafe.Sizeof(int32(0)) + unsafe.Sizeof(uintptr(0)) - 1) &^ (unsafe.Sizeof(uintptr(0)) - 1)

// peek returns the PID of an exited child without reaping it, 0 if none
// has exited, or an error (ECHILD: no children at all).
func peek() (int, error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		// WNOHANG and no exited child: waitid(2) zeroes si_pid.
		return int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), unionOffset))), nil
	}
}

// exitedChild reports whether pid is an exited child of ours not yet
// reaped.
func exitedChild(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && *(*int32)(unsafe.Add(unsafe.Pointer(&info), unionOffset)) == int32(pid)
	}
}

// reapAll reaps every exited child that os/exec does not own, until none
// is left. It reports false once Close has begun: nothing is reaped then.
func (in *Init) reapAll() bool {
	in.reapMu.Lock()
	defer in.reapMu.Unlock()
	for {
		select {
		case <-in.stop:
			return false
		default:
		}
		pid, err := peek()
		if err != nil {
			if !errors.Is(err, unix.ECHILD) {
				in.log.Error("waitid", zap.Error(err))
			}
			return true
		}
		if pid == 0 {
			return true
		}
		if ch := in.ownedBy(pid); ch != nil {
			// waitid(P_ALL) would report it again and again until its
			// owner reaps it, which it does at once; the others are
			// found in /proc meanwhile.
			in.sweep()
			select {
			case <-ch:
			case <-time.After(10 * time.Millisecond):
			case <-in.stop:
				return false
			}
			continue
		}
		in.reap(pid)
	}
}

// reap reports pid's exit and reaps it; pid has exited and no one else
// may reap it.
func (in *Init) reap(pid int) {
	if !exitedChild(pid) {
		return // reaped meanwhile: an os/exec child whose start failed
	}
	if f := in.onExit.Load(); f != nil {
		(*f)(int32(pid))
	}
	isCmd := pid == in.cmdPID
	if isCmd {
		in.fwdMu.Lock()
		defer in.fwdMu.Unlock()
	}
	var ws unix.WaitStatus
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got != pid {
			in.log.Debug("reap", zap.Int("pid", pid), zap.Int("got", got), zap.Error(err))
			return
		}
		break
	}
	in.reaped.Add(1)
	if !isCmd {
		return
	}
	in.cmdReaped, in.status = true, ExitCode(ws)
	in.log.Info("command exited", zap.Int("pid", pid), zap.Int("status", in.status), zap.String("wait_status", waitString(ws)))
	close(in.cmdExited)
	go in.finish()
}

func waitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

// sweep reaps the exited children /proc shows (state Z, our PID as parent)
// that no one owns: while an owned zombie stands first in waitid's way.
func (in *Init) sweep() {
	if !in.ownProc {
		return
	}
	procs, err := in.cfg.Procs.Scan()
	if err != nil {
		in.log.Warn("scan /proc for exited children", zap.Error(err))
		return
	}
	for _, p := range procs {
		if p.State == 'Z' && int(p.PPID) == in.self && in.ownedBy(int(p.PID)) == nil {
			in.reap(int(p.PID))
		}
	}
}

func (in *Init) forwardLoop() {
	defer in.loops.Done()
	for {
		select {
		case <-in.stop:
			return
		case s := <-in.fwd:
			in.forward(s.(syscall.Signal))
		}
	}
}

// forward passes sig on to CMD or its process group while CMD is unreaped.
func (in *Init) forward(sig syscall.Signal) {
	in.fwdMu.Lock()
	defer in.fwdMu.Unlock()
	if in.cmdReaped {
		in.log.Debug("signal not forwarded: the command has exited", zap.String("signal", unix.SignalName(sig)))
		return
	}
	var err error
	if in.cfg.Forward == ForwardGroup || in.cmdFD < 0 {
		// CMD is unreaped (fwdMu): its PID, and the group id, are ours.
		err = unix.Kill(in.cfg.Forward.target(in.cmdPID), sig)
	} else {
		err = unix.PidfdSendSignal(in.cmdFD, sig, nil, 0)
	}
	if err != nil {
		if !errors.Is(err, unix.ESRCH) { // ESRCH: CMD has exited, or its group is empty
			in.log.Warn("forward signal", zap.String("signal", unix.SignalName(sig)), zap.Error(err))
		}
		return
	}
	in.forwarded.Add(1)
	in.log.Debug("signal forwarded", zap.String("signal", unix.SignalName(sig)), zap.Stringer("to", in.cfg.Forward))
}
