package e2e

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The capability dropper: the test binary run with dropSysResourceEnv=1
// and a command after its name removes CAP_SYS_RESOURCE from its bounding,
// inheritable and ambient sets and execs the command, which then runs
// without it even as root (capabilities(7): root's permitted set after
// execve is the bounding set's, plus inheritable and ambient). Like
// setpriv --bounding-set=-sys_resource, without needing setpriv. Where the
// capability is absent already it changes nothing.
const dropSysResourceEnv = "SUPERVISOR_TEST_DROP_SYS_RESOURCE"

func init() {
	if os.Getenv(dropSysResourceEnv) != "1" {
		return
	}
	// Capabilities belong to a thread, and execve takes the calling
	// thread's: drop and exec on one.
	runtime.LockOSThread()
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "drop CAP_SYS_RESOURCE: "+format+"\n", a...)
		os.Exit(126)
	}
	if len(os.Args) < 2 {
		fail("no command")
	}
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_RESOURCE, 0, 0, 0); err != nil {
		fail("PR_CAPBSET_DROP: %v", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		fail("PR_CAP_AMBIENT_CLEAR_ALL: %v", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fail("capget: %v", err)
	}
	data[0].Inheritable &^= 1 << unix.CAP_SYS_RESOURCE
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("capset: %v", err)
	}
	os.Unsetenv(dropSysResourceEnv)
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	fail("exec %s: %v", os.Args[1], err)
}
