package testutil

import (
	"testing"

	"golang.org/x/sys/unix"
)

// ConnectorSocket is a user-space NETLINK_CONNECTOR socket, as any process
// with CAP_NET_ADMIN may open to forge proc connector messages, bound to a
// port the kernel picks (port 0 in bind: netlink_autobind), and that port.
// It is closed when the test ends.
func ConnectorSocket(t testing.TB) (fd int, port uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatalf("forger socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("forger bind: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("forger getsockname: %v", err)
	}
	return fd, sa.(*unix.SockaddrNetlink).Pid
}
