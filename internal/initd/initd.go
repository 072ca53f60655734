package initd

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Forward says where forwarded signals go.
type Forward int

const (
	// ForwardChild sends them to CMD alone (tini's default).
	ForwardChild Forward = iota
	// ForwardGroup sends them to CMD's process group (tini -g): CMD and
	// every process it started that did not leave the group.
	ForwardGroup
)

// ParseForward reads --forward-to: child or group.
func ParseForward(s string) (Forward, error) {
	switch s {
	case "child":
		return ForwardChild, nil
	case "group":
		return ForwardGroup, nil
	}
	return 0, fmt.Errorf("invalid value %q (want child or group)", s)
}

func (f Forward) String() string {
	if f == ForwardGroup {
		return "group"
	}
	return "child"
}

// target is the kill(2) argument for CMD's PID: the PID, or minus the
// process group id, which is CMD's PID (setpgid(0, 0) in the child).
func (f Forward) target(pid int) int {
	if f == ForwardGroup {
		return -pid
	}
	return pid
}

// Forwarded are the signals init catches and passes on to CMD.
var Forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

// ExitCode maps CMD's wait status to our exit status: its exit code, or
// 128 + the signal number when a signal killed it, as a shell reports it.
func ExitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1 // stopped or continued: not an exit; not reported by WEXITED waits
}

// StartCode is the exit status when CMD cannot be started: 127 when it is
// not found, 126 when it is found but cannot be run, as a shell (and
// docker) report them.
func StartCode(err error) int {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, errNotFound) {
		return 127
	}
	return 126
}

var errNotFound = errors.New("not found in PATH")

// cmdlineArgs checks CMD: a program and its arguments, none holding a NUL.
func cmdlineArgs(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("no command to run")
	}
	for _, a := range argv {
		if _, err := syscall.BytePtrFromString(a); err != nil {
			return fmt.Errorf("argument %q: %w", a, err)
		}
	}
	return nil
}
