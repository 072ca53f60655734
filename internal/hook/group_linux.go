package hook

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// waitExited blocks until our child pid has exited, without reaping it
// (waitid(2) with WNOWAIT): its zombie keeps the PID, and so its process
// group id, from being reused until exec.Cmd.Wait reaps it.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// killGroup sends SIGKILL to the process group pgid: a hook's shell and
// everything it started that did not leave the group. pgid is the PID of
// our own child, made a group leader by setpgid(2) at fork and not yet
// reaped. Never group 0 or 1 (kill(2) with -1 means every process; 0 our
// own group), never our own group.
func killGroup(pgid int) error {
	if pgid <= 1 || pgid == os.Getpid() || pgid == unix.Getpgrp() {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	return nil
}

// closeOnExec marks every descriptor above stderr close-on-exec, so that a
// hook gets stdin, stdout and stderr and nothing else. What the daemon opens
// is close-on-exec already (Go's runtime, pidfd_open(2), the C timer's
// TFD_CLOEXEC); descriptors inherited from whoever started the daemon are
// not. close_range(2) with CLOSE_RANGE_CLOEXEC is Linux 5.11; before it,
// one fcntl(2) per entry of /proc/self/fd.
func closeOnExec() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd) // the one ReadDir used may be gone: harmless
		}
	}
	return nil
}
