//go:build linux

package procevents

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotAcknowledged means the kernel never answered the subscription. The
// proc connector ignores listeners outside the initial PID and user
// namespaces (cn_proc.c cn_proc_mcast_ctl returns before acking), so this is
// what a container without --pid=host sees. Events that still arrive on such
// a socket belong to other subscribers' streams and prove nothing.
var ErrNotAcknowledged = errors.New("procevents: the kernel did not acknowledge the proc connector subscription (not in the initial PID/user namespace?)")

// ErrOverrun means the kernel dropped messages because the receive buffer was
// full (ENOBUFS). The socket stays usable; the caller must resynchronise its
// view of the process table from /proc.
var ErrOverrun = errors.New("procevents: receive buffer overrun, events lost")

// Config configures Dial.
type Config struct {
	// ReadBuffer is the receive buffer to ask for with SO_RCVBUFFORCE, in
	// bytes. The kernel doubles it for bookkeeping overhead. Zero means 8 MiB.
	ReadBuffer int
	// AckTimeout bounds the wait for the subscription's acknowledgement.
	// Zero means 2s.
	AckTimeout time.Duration
	// OnForged, if set, is called once, from the reading goroutine, for the
	// first datagram dropped because the kernel did not send it, with the
	// sender's netlink port (for a user-space socket usually its PID).
	OnForged func(senderPort uint32)
}

// Conn is a subscribed proc connector socket.
type Conn struct {
	c      *netlink.Conn
	buf    []byte
	ev     Event // reused by read so the hot path does not allocate
	from   unix.RawSockaddrNetlink
	rc     syscall.RawConn
	recv   func(fd uintptr) bool // c.recvOnce, bound once: a method value allocates
	n      int                   // recvOnce's results
	rerr   error
	gaps   Gaps
	rcvbuf int
	// Counters are atomic so Stats may be read while another goroutine
	// reads events.
	lost, overrun, bad, forged atomic.Uint64
	onForged                   func(senderPort uint32)
}

// subscribeBuffer is the least receive buffer the subscription is made
// with (see Dial).
const subscribeBuffer = 1 << 20

// Dial opens a NETLINK_CONNECTOR socket, joins CN_IDX_PROC, sets the receive
// buffer and subscribes, waiting for the kernel's acknowledgement. It returns
// ErrNotAcknowledged (wrapped) if none comes; the socket is closed then.
func Dial(cfg Config) (*Conn, error) {
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 8 << 20
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 2 * time.Second
	}
	if ns, known := namespace(); known && ns != "" {
		// No ack will come: say so now rather than after the timeout
		// (a container's init waits for it before its first scan).
		return nil, fmt.Errorf("%w: this process is in a non-initial %s namespace", ErrNotAcknowledged, ns)
	}
	nc, err := netlink.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: cnIdxProc})
	if err != nil {
		return nil, fmt.Errorf("procevents: dial netlink connector: %w", err)
	}
	c := &Conn{c: nc, buf: make([]byte, 64<<10), onForged: cfg.OnForged}
	c.recv = c.recvOnce
	if c.rc, err = nc.SyscallConn(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("procevents: raw conn: %w", err)
	}
	// The ack comes through the same buffer as every event: a small buffer
	// already full of other processes' events (another subscriber keeps
	// them coming) drops it, and the subscription would look refused. So
	// subscribe with room for it, then shrink to what was asked for.
	if err := c.setReadBuffer(max(cfg.ReadBuffer, subscribeBuffer)); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.subscribe(mcastListen, cfg.AckTimeout); err != nil {
		nc.Close()
		return nil, err
	}
	if cfg.ReadBuffer < subscribeBuffer {
		if err := c.setReadBuffer(cfg.ReadBuffer); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// The initial namespaces' inode numbers are fixed (PROC_PID_INIT_INO and
// PROC_USER_INIT_INO in include/linux/proc_ns.h, Linux 3.8).
const (
	initPIDNamespaceIno  = 0xEFFFFFFC
	initUserNamespaceIno = 0xEFFFFFFD
)

// namespace names the namespace ("pid" or "user") that keeps the proc
// connector from acknowledging us, or "" if we are in the initial ones;
// known is false when /proc/self/ns cannot tell.
func namespace() (ns string, known bool) {
	for _, n := range []struct {
		name string
		ino  uint64
	}{{"pid", initPIDNamespaceIno}, {"user", initUserNamespaceIno}} {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+n.name, &st); err != nil {
			return "", false
		}
		if st.Ino != n.ino {
			return n.name, true
		}
	}
	return "", true
}

// setReadBuffer uses SO_RCVBUFFORCE (root) so net.core.rmem_max does not cap
// it, falling back to SO_RCVBUF, and reads back what the kernel granted.
func (c *Conn) setReadBuffer(n int) error {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return fmt.Errorf("procevents: raw conn: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		if serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
		if serr == nil {
			c.rcvbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}
	}); err != nil {
		return fmt.Errorf("procevents: set receive buffer: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("procevents: set receive buffer to %d bytes: %w", n, serr)
	}
	return nil
}

// ReadBuffer is the receive buffer the kernel granted, in bytes.
func (c *Conn) ReadBuffer() int { return c.rcvbuf }

func (c *Conn) subscribe(op uint32, timeout time.Duration) error {
	// The ack is multicast to every listener of the group, so another
	// subscriber's ack can reach us: pick an unlikely seq and match on ack.
	seq := rand.Uint32() | 1
	if seq == ^uint32(0) {
		seq--
	}
	_, err := c.c.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.Done},
		Data:   subscribeMsg(seq, op),
	})
	if err != nil {
		return fmt.Errorf("procevents: send subscription: %w", err)
	}
	if op != mcastListen {
		return nil
	}
	deadline := time.Now().Add(timeout)
	if err := c.c.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("procevents: set deadline: %w", err)
	}
	defer c.c.SetReadDeadline(time.Time{})
	for {
		var acked bool
		var ackErr uint32
		err := c.read(func(ev *Event) {
			if ev.Type == None && ev.Ack == seq+1 {
				acked, ackErr = true, ev.Err
			}
		})
		switch {
		case acked && ackErr != 0:
			return fmt.Errorf("procevents: subscription refused: %w", unix.Errno(ackErr))
		case acked:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("%w (waited %s)", ErrNotAcknowledged, timeout)
		case err != nil && !errors.Is(err, ErrOverrun):
			return err
		}
	}
}

// Close unsubscribes (best effort) and closes the socket.
func (c *Conn) Close() error {
	_ = c.subscribe(mcastIgnore, 0)
	return c.c.Close()
}

// Stats are counters kept by Conn.
type Stats struct {
	Lost     uint64 // messages the kernel dropped, from per-CPU sequence gaps
	Overruns uint64 // ENOBUFS returned by recv
	Bad      uint64 // messages that failed to decode
	Forged   uint64 // datagrams dropped because the kernel did not send them
}

// Stats returns the counters.
func (c *Conn) Stats() Stats {
	return Stats{Lost: c.lost.Load(), Overruns: c.overrun.Load(), Bad: c.bad.Load(), Forged: c.forged.Load()}
}

// Read blocks for one datagram and calls fn for each proc event in it; ev is
// reused and must not be retained. It returns ErrOverrun when messages were
// lost (ENOBUFS, or a gap in the kernel's sequence numbers): the caller
// should resynchronise. Malformed messages are counted and skipped, and so
// are datagrams the kernel did not send (see FromKernel). Read does not
// allocate.
func (c *Conn) Read(fn func(ev *Event)) error {
	return c.read(fn)
}

func (c *Conn) read(fn func(ev *Event)) error {
	if err := c.rc.Read(c.recv); err != nil {
		return fmt.Errorf("procevents: receive: %w", err)
	}
	n, rerr := c.n, c.rerr
	if rerr != nil {
		if rerr == unix.ENOBUFS {
			c.overrun.Add(1)
			c.gaps.Expect()
			return ErrOverrun
		}
		return fmt.Errorf("procevents: receive: %w", rerr)
	}
	if !FromKernel(&c.from) {
		// Dropped before decoding: a forged message must not move the
		// sequence baseline (a fake gap would force a resync) nor count
		// as the subscription's ack.
		if c.forged.Add(1) == 1 && c.onForged != nil {
			c.onForged(c.from.Pid)
		}
		return nil
	}
	ev := &c.ev
	news := false
	if Datagram(c.buf[:n], func(p []byte) {
		if Decode(p, ev) != nil {
			c.bad.Add(1)
			return
		}
		if n, unexpected := c.gaps.Observe(ev.CPU, ev.Seq); n > 0 {
			c.lost.Add(n)
			news = news || unexpected
		}
		fn(ev)
	}) != nil {
		c.bad.Add(1)
	}
	if news {
		// Lost without ENOBUFS: the caller must resynchronise all the same.
		c.overrun.Add(1)
		return ErrOverrun
	}
	return nil
}

// recvOnce is the body of c.rc.Read: one non-blocking receive, results in
// c.n and c.rerr; false asks the runtime poller to wait for readiness.
func (c *Conn) recvOnce(fd uintptr) bool {
	c.n, c.rerr = c.recvfrom(int(fd))
	return !(c.rerr == unix.EAGAIN || c.rerr == unix.EINTR)
}

// recvfrom is recvfrom(2) into c.buf with the source address in c.from.
// unix.Recvfrom would return the address as a freshly allocated Sockaddr.
func (c *Conn) recvfrom(fd int) (int, error) {
	c.from = unix.RawSockaddrNetlink{}
	alen := uint32(unix.SizeofSockaddrNetlink)
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd),
		uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&c.from)), uintptr(unsafe.Pointer(&alen)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// FromKernel reports whether a datagram with source address from was sent
// by the kernel. netlink_recvmsg (net/netlink/af_netlink.c) fills the source
// address with nl_pid = NETLINK_CB(skb).portid; netlink_sendmsg sets that to
// the sending socket's port, which is never 0 for a user-space socket (a
// socket that sends unbound is autobound to a nonzero port first), while the
// connector's own messages (cn_netlink_send_mult → netlink_broadcast from the
// kernel socket) carry portid 0. Anyone with CAP_NET_ADMIN may multicast to
// CN_IDX_PROC, so only the port tells the kernel's events from forgeries.
func FromKernel(from *unix.RawSockaddrNetlink) bool {
	return from.Family == unix.AF_NETLINK && from.Pid == 0
}

// Interrupt makes a blocked Read return os.ErrDeadlineExceeded (wrapped),
// so the reading goroutine can notice a shutdown.
func (c *Conn) Interrupt() error { return c.c.SetReadDeadline(time.Unix(1, 0)) }
