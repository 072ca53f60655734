package procevents

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is proc_event.what (enum proc_cn_event in include/uapi/linux/cn_proc.h).
type Type uint32

// The event types the kernel sends. Only Fork, Exec, Comm and Exit matter to
// the tracker; the rest decode as their type with no payload.
const (
	None     Type = 0x00000000 // the reply to a subscription: an ack
	Fork     Type = 0x00000001
	Exec     Type = 0x00000002
	UID      Type = 0x00000004
	GID      Type = 0x00000040
	SID      Type = 0x00000080
	Ptrace   Type = 0x00000100
	Comm     Type = 0x00000200
	Coredump Type = 0x40000000
	Exit     Type = 0x80000000
)

func (t Type) String() string {
	switch t {
	case None:
		return "none"
	case Fork:
		return "fork"
	case Exec:
		return "exec"
	case UID:
		return "uid"
	case GID:
		return "gid"
	case SID:
		return "sid"
	case Ptrace:
		return "ptrace"
	case Comm:
		return "comm"
	case Coredump:
		return "coredump"
	case Exit:
		return "exit"
	}
	return fmt.Sprintf("0x%08x", uint32(t))
}

// Connector addressing (include/uapi/linux/connector.h).
const (
	cnIdxProc = 1 // CN_IDX_PROC, also the multicast group
	cnValProc = 1 // CN_VAL_PROC

	mcastListen = 1 // PROC_CN_MCAST_LISTEN
	mcastIgnore = 2 // PROC_CN_MCAST_IGNORE
)

// Sizes of the wire structures. cn_msg is 20 bytes; proc_event's header is
// what(4) cpu(4) timestamp_ns(8, aligned to 8 within the struct), followed by
// the event_data union whose largest members (comm, exit) are 24 bytes.
const (
	nlmsgHdrLen   = 16
	cnMsgLen      = 20
	procHdrLen    = 16
	procEventSize = procHdrLen + 24
)

// Event is one decoded proc_event. Which fields are meaningful depends on
// Type:
//
//	Fork:  PID/TGID are the child, ParentPID/ParentTGID the parent.
//	Exec:  PID/TGID of the process that called execve.
//	Comm:  PID/TGID of the renamed task, Comm its new name.
//	Exit:  PID/TGID, ExitCode, ExitSignal, ParentPID/ParentTGID.
//	None:  an acknowledgement; Ack is cn_msg.ack and Err the kernel's errno.
//
// PID is a task (thread) id; TGID is the process id. A thread-group leader
// has PID == TGID.
type Event struct {
	Type Type
	// Seq is cn_msg.seq: the kernel's per-CPU counter (cn_proc.c send_msg),
	// so a gap on one CPU means events were lost.
	Seq uint32
	// Ack is cn_msg.ack. The reply to a subscription carries the caller's
	// seq + 1 here (cn_proc_ack); its Seq is the kernel's own counter.
	Ack uint32
	CPU uint32
	// Timestamp is ktime_get_ns(): CLOCK_MONOTONIC, not boottime.
	Timestamp uint64

	PID, TGID             int32
	ParentPID, ParentTGID int32
	ExitCode, ExitSignal  uint32
	Err                   uint32
	Comm                  [16]byte
}

// CommString returns Comm up to its first NUL.
func (e *Event) CommString() string {
	return CommString(e.Comm[:])
}

// CommString returns b up to its first NUL byte.
func CommString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Leader reports whether the event concerns a thread-group leader, that is a
// process rather than one of its other threads.
func (e *Event) Leader() bool { return e.PID == e.TGID }

// Decoding errors. Callers count them and go on: one bad message must never
// stop the daemon.
var (
	ErrShort    = errors.New("procevents: message too short")
	ErrNotProc  = errors.New("procevents: not a proc connector message")
	ErrBadLen   = errors.New("procevents: cn_msg length does not match payload")
	ErrTrailing = errors.New("procevents: malformed netlink header")
)

var le = binary.NativeEndian

// Decode decodes the payload of one netlink message from the proc connector:
// a struct cn_msg followed by a struct proc_event. It does not allocate.
func Decode(b []byte, ev *Event) error {
	if len(b) < cnMsgLen+procHdrLen {
		return ErrShort
	}
	if le.Uint32(b[0:4]) != cnIdxProc || le.Uint32(b[4:8]) != cnValProc {
		return ErrNotProc
	}
	*ev = Event{
		Seq: le.Uint32(b[8:12]),
		Ack: le.Uint32(b[12:16]),
	}
	n := int(le.Uint16(b[16:18]))
	p := b[cnMsgLen:]
	if n > len(p) {
		return ErrBadLen
	}
	p = p[:n]
	if len(p) < procHdrLen {
		return ErrShort
	}
	ev.Type = Type(le.Uint32(p[0:4]))
	ev.CPU = le.Uint32(p[4:8])
	ev.Timestamp = le.Uint64(p[8:16])
	d := p[procHdrLen:]

	// need is the bytes of event_data each type reads; older kernels may
	// send a shorter union, so demand only what the type uses.
	need := 0
	switch ev.Type {
	case None:
		need = 4
	case Fork:
		need = 16
	case Exec, SID:
		need = 8
	case Comm, Exit:
		need = 24
	default:
		return nil
	}
	if len(d) < need {
		return ErrShort
	}
	switch ev.Type {
	case None:
		ev.Err = le.Uint32(d[0:4])
	case Fork:
		ev.ParentPID = int32(le.Uint32(d[0:4]))
		ev.ParentTGID = int32(le.Uint32(d[4:8]))
		ev.PID = int32(le.Uint32(d[8:12]))
		ev.TGID = int32(le.Uint32(d[12:16]))
	case Exec, SID:
		ev.PID = int32(le.Uint32(d[0:4]))
		ev.TGID = int32(le.Uint32(d[4:8]))
	case Comm:
		ev.PID = int32(le.Uint32(d[0:4]))
		ev.TGID = int32(le.Uint32(d[4:8]))
		copy(ev.Comm[:], d[8:24])
	case Exit:
		ev.PID = int32(le.Uint32(d[0:4]))
		ev.TGID = int32(le.Uint32(d[4:8]))
		ev.ExitCode = le.Uint32(d[8:12])
		ev.ExitSignal = le.Uint32(d[12:16])
		ev.ParentPID = int32(le.Uint32(d[16:20]))
		ev.ParentTGID = int32(le.Uint32(d[20:24]))
	}
	return nil
}

// Datagram walks the netlink messages of one received datagram and calls fn
// with the payload of each (the bytes after struct nlmsghdr). The kernel sends
// one proc_event per datagram, but the walk does not assume it.
// It returns ErrTrailing when a header's length is impossible; messages
// before it have been delivered.
func Datagram(b []byte, fn func(payload []byte)) error {
	for len(b) >= nlmsgHdrLen {
		l := int(le.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			return ErrTrailing
		}
		fn(b[nlmsgHdrLen:l])
		a := (l + 3) &^ 3 // NLMSG_ALIGN
		if a > len(b) {
			return nil
		}
		b = b[a:]
	}
	if len(b) != 0 {
		return ErrTrailing
	}
	return nil
}

// subscribeMsg builds the cn_msg that asks for (op = PROC_CN_MCAST_LISTEN) or
// drops (PROC_CN_MCAST_IGNORE) the event stream. The 4-byte form (a bare op)
// subscribes to every event type; the 8-byte proc_input form of Linux 6.6
// filters by type, but its filter also drops the ack (cn_filter compares the
// type mask with what == PROC_EVENT_NONE), and the ack is how we know the
// subscription took.
func subscribeMsg(seq, op uint32) []byte {
	b := make([]byte, cnMsgLen+4)
	le.PutUint32(b[0:4], cnIdxProc)
	le.PutUint32(b[4:8], cnValProc)
	le.PutUint32(b[8:12], seq)
	// cn_proc_ack answers with ack = the request's ack + 1 and overwrites
	// seq with its own counter, so our token goes in both fields.
	le.PutUint32(b[12:16], seq)
	le.PutUint16(b[16:18], 4)
	le.PutUint32(b[20:24], op)
	return b
}

// Gaps counts lost events from the per-CPU sequence numbers the kernel
// stamps on every proc connector message (cn_proc.c send_msg increments a
// per-CPU counter under a local lock, so one CPU's messages arrive in order).
// A jump of k on one CPU means k-1 messages were dropped before reaching us:
// because the socket's receive buffer overflowed (reported as ENOBUFS), or
// because the kernel could not allocate the message (nlmsg_new with
// GFP_NOWAIT, under memory pressure; reported by nothing but the gap).
type Gaps struct {
	last     map[uint32]uint32
	expected map[uint32]bool
}

// Observe records seq from cpu and returns how many messages from that CPU
// were skipped since the last one seen, and whether that loss is news: not
// the one an ENOBUFS already reported (see Expect). The first message from a
// CPU only sets the baseline.
func (g *Gaps) Observe(cpu, seq uint32) (lost uint64, unexpected bool) {
	if g.last == nil {
		g.last = make(map[uint32]uint32)
	}
	prev, ok := g.last[cpu]
	g.last[cpu] = seq
	wasExpected := g.expected[cpu]
	if wasExpected {
		delete(g.expected, cpu)
	}
	if !ok {
		return 0, false
	}
	d := seq - prev // wraps correctly in uint32
	if d == 0 || d > 1<<31 {
		// A repeat or a step backwards: not a loss we can count
		// (a reordered or duplicated message); take the new baseline.
		return 0, false
	}
	return uint64(d - 1), d > 1 && !wasExpected
}

// Expect says that a loss was reported (ENOBUFS): the next gap on each CPU
// is that loss, counted but not news.
func (g *Gaps) Expect() {
	if g.expected == nil {
		g.expected = make(map[uint32]bool)
	}
	for cpu := range g.last {
		g.expected[cpu] = true
	}
}

// Encode appends to b the cn_msg and proc_event bytes that Decode reads back
// as ev (Fork, Exec, Comm, Exit and None carry their payload; other types
// only the header). The kernel never needs it from us; tests use it to forge
// events the way any CAP_NET_ADMIN process can.
func Encode(b []byte, ev *Event) []byte {
	m := make([]byte, cnMsgLen+procEventSize)
	le.PutUint32(m[0:4], cnIdxProc)
	le.PutUint32(m[4:8], cnValProc)
	le.PutUint32(m[8:12], ev.Seq)
	le.PutUint32(m[12:16], ev.Ack)
	le.PutUint16(m[16:18], procEventSize)
	p := m[cnMsgLen:]
	le.PutUint32(p[0:4], uint32(ev.Type))
	le.PutUint32(p[4:8], ev.CPU)
	le.PutUint64(p[8:16], ev.Timestamp)
	d := p[procHdrLen:]
	switch ev.Type {
	case None:
		le.PutUint32(d[0:4], ev.Err)
	case Fork:
		le.PutUint32(d[0:4], uint32(ev.ParentPID))
		le.PutUint32(d[4:8], uint32(ev.ParentTGID))
		le.PutUint32(d[8:12], uint32(ev.PID))
		le.PutUint32(d[12:16], uint32(ev.TGID))
	case Exec, SID:
		le.PutUint32(d[0:4], uint32(ev.PID))
		le.PutUint32(d[4:8], uint32(ev.TGID))
	case Comm:
		le.PutUint32(d[0:4], uint32(ev.PID))
		le.PutUint32(d[4:8], uint32(ev.TGID))
		copy(d[8:24], ev.Comm[:])
	case Exit:
		le.PutUint32(d[0:4], uint32(ev.PID))
		le.PutUint32(d[4:8], uint32(ev.TGID))
		le.PutUint32(d[8:12], ev.ExitCode)
		le.PutUint32(d[12:16], ev.ExitSignal)
		le.PutUint32(d[16:20], uint32(ev.ParentPID))
		le.PutUint32(d[20:24], uint32(ev.ParentTGID))
	}
	return append(b, m...)
}
