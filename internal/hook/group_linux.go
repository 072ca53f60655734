package hook

import (
	"errors"
	"fmt"
	"os"

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
