package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerOf reads the credentials the kernel recorded for the client when it
// called connect(2) (SO_PEERCRED, unix(7)): they cannot be forged by the
// client and do not change if it changes its own credentials later.
//
// The supplementary groups come from SO_PEERGROUPS (Linux 4.13), taken by
// the kernel at the same moment. Only on an older kernel are they read from
// /proc/PID/status, at accept time, with the PID the kernel recorded: that
// is race-free enough, since the client waits for its answer (its PID is
// not free for reuse while it does), and a process that replaced an
// exited client under another uid is caught by the Uid line check. Root
// (uid 0) needs no groups at all.
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var groups []uint32
	var cerr, gerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr == nil && cred.Uid != 0 {
			groups, gerr = peerGroups(int(fd))
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	p := Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Groups: groups}
	if cred.Uid != 0 && gerr != nil {
		if p.Groups, err = procGroups(cred.Pid, cred.Uid); err != nil {
			return p, fmt.Errorf("groups of pid %d: SO_PEERGROUPS: %v; /proc: %w", cred.Pid, gerr, err)
		}
	}
	return p, nil
}

// peerGroups is getsockopt(SO_PEERGROUPS): an array of gid_t. The kernel
// answers ERANGE with the size it needs when the buffer is short.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for try := 0; try < 3; try++ {
		buf := make([]uint32, n)
		size := uint32(4 * n)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case e == unix.ERANGE && int(size) > 4*n:
			n = int(size)/4 + 1
			continue
		case e != 0:
			return nil, e
		}
		return buf[:size/4], nil
	}
	return nil, errors.New("SO_PEERGROUPS: group list keeps growing")
}

// procGroups reads the supplementary groups of pid from /proc, after
// checking that the process there still has uid as its effective uid.
func procGroups(pid int32, uid uint32) ([]uint32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	if err := checkStatusUID(b, uid); err != nil {
		return nil, err
	}
	return parseStatusGroups(b)
}
