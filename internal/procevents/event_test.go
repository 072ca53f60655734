package procevents

import (
	"encoding/binary"
	"errors"
	"testing"
)

// Messages as the kernel writes them: little-endian (amd64, arm64).
func cnHdr(seq, ack uint32, l uint16) []byte {
	b := le32(1, 1, seq, ack)                   // id: CN_IDX_PROC, CN_VAL_PROC
	return append(b, byte(l), byte(l>>8), 0, 0) // len, flags
}

// le32 is vs, little-endian.
func le32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// procEvent is a cn_msg (sequence seq, ack, len 40) holding a struct
// proc_event: what, cpu, timestamp_ns, and the event_data union: data,
// zero-padded to its 24 bytes.
func procEvent(seq, ack, what, cpu uint32, ts uint64, data ...[]byte) []byte {
	b := append(cnHdr(seq, ack, 40), le32(what, cpu)...)
	b = binary.LittleEndian.AppendUint64(b, ts)
	union := cat(data...)
	return append(b, append(union, make([]byte, 24-len(union))...)...)
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// The proc_event what values.
const (
	evNone = 0
	evFork = 1
	evExec = 2
	evUID  = 4
	evComm = 0x200
	evExit = 0x80000000
)

var (
	forkEvent = procEvent(7, 0, evFork, 1, 1e9, le32(100, 100, 200, 200)) // parent pid, tgid; child pid, tgid
	// A new thread: parent 101 (a thread of 100), child 201 (a thread of 100).
	threadForkEvent = procEvent(8, 0, evFork, 0, 1, le32(101, 100, 201, 100))
	execEvent       = procEvent(9, 0, evExec, 0, 2, le32(200, 200))                    // process pid, tgid
	commEvent       = procEvent(10, 0, evComm, 0, 3, le32(200, 200), []byte("claude")) // process pid, tgid, comm
	exitEvent       = procEvent(11, 0, evExit, 0, 4, le32(200, 200, 15, 17, 100, 100)) // pid, tgid, exit_code 15 (SIGTERM), exit_signal SIGCHLD, parent pid, tgid
	ackEvent        = procEvent(500, 43, evNone, 0, 0, le32(0))                        // ack.err
	uidEvent        = procEvent(12, 0, evUID, 0, 5, le32(200, 200, 1000, 1000))        // ignored
)

func TestDecode(t *testing.T) {
	var comm [16]byte
	copy(comm[:], "claude")
	tests := []struct {
		name string
		b    []byte
		want Event
		err  error
	}{
		{"fork", forkEvent, Event{Type: Fork, Seq: 7, CPU: 1, Timestamp: 1e9, ParentPID: 100, ParentTGID: 100, PID: 200, TGID: 200}, nil},
		{"thread fork", threadForkEvent, Event{Type: Fork, Seq: 8, Timestamp: 1, ParentPID: 101, ParentTGID: 100, PID: 201, TGID: 100}, nil},
		{"exec", execEvent, Event{Type: Exec, Seq: 9, Timestamp: 2, PID: 200, TGID: 200}, nil},
		{"comm", commEvent, Event{Type: Comm, Seq: 10, Timestamp: 3, PID: 200, TGID: 200, Comm: comm}, nil},
		{"exit", exitEvent, Event{Type: Exit, Seq: 11, Timestamp: 4, PID: 200, TGID: 200, ExitCode: 15, ExitSignal: 17, ParentPID: 100, ParentTGID: 100}, nil},
		{"ack", ackEvent, Event{Type: None, Seq: 500, Ack: 43}, nil},
		{"uid ignored payload", uidEvent, Event{Type: UID, Seq: 12, Timestamp: 5}, nil},
		{"empty", nil, Event{}, ErrShort},
		{"cn header only", cnHdr(1, 0, 0), Event{}, ErrShort},
		{"wrong connector id", cat([]byte{0x02, 0, 0, 0}, forkEvent[4:]), Event{}, ErrNotProc},
		{"len beyond payload", cat(cnHdr(1, 0, 200), forkEvent[20:]), Event{}, ErrBadLen},
		{"len shorter than header", cat(cnHdr(1, 0, 8), forkEvent[20:]), Event{}, ErrShort},
		{"fork truncated", cat(cnHdr(7, 0, 28), forkEvent[20:48]), Event{}, ErrShort},
		{"exit truncated", cat(cnHdr(11, 0, 32), exitEvent[20:52]), Event{}, ErrShort},
		{"comm truncated", cat(cnHdr(10, 0, 30), commEvent[20:50]), Event{}, ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Event
			err := Decode(tt.b, &got)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// Encode writes back exactly the bytes the kernel's layout has.
func TestEncode(t *testing.T) {
	for _, b := range [][]byte{forkEvent, threadForkEvent, execEvent, commEvent, exitEvent, ackEvent} {
		var ev Event
		if err := Decode(b, &ev); err != nil {
			t.Fatal(err)
		}
		if got := Encode(nil, &ev); string(got) != string(b) {
			t.Errorf("Encode(%s)\n got %x\nwant %x", ev.Type, got, b)
		}
	}
}

func nlmsg(payload []byte) []byte {
	l := 16 + len(payload)
	h := []byte{
		byte(l), byte(l >> 8), 0, 0, // nlmsg_len
		0x03, 0x00, // nlmsg_type: NLMSG_DONE
		0x00, 0x00, // nlmsg_flags
		0, 0, 0, 0, // nlmsg_seq
		0, 0, 0, 0, // nlmsg_pid
	}
	out := cat(h, payload)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

func TestDatagram(t *testing.T) {
	var got []Type
	b := cat(nlmsg(forkEvent), nlmsg(exitEvent))
	if err := Datagram(b, func(p []byte) {
		var ev Event
		if err := Decode(p, &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Type)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != Fork || got[1] != Exit {
		t.Fatalf("got %v", got)
	}
	for _, bad := range [][]byte{
		{0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // nlmsg_len 4 < header
		{0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // beyond the datagram
		{0x10, 0, 0}, // trailing bytes
	} {
		if err := Datagram(bad, func([]byte) {}); !errors.Is(err, ErrTrailing) {
			t.Errorf("Datagram(%x) = %v, want ErrTrailing", bad, err)
		}
	}
}

func TestGaps(t *testing.T) {
	var g Gaps
	steps := []struct {
		cpu, seq uint32
		lost     uint64
		news     bool
		expect   bool // call Expect before this step
	}{
		{cpu: 0, seq: 10}, // baseline
		{cpu: 0, seq: 11},
		{cpu: 1, seq: 500},                     // baseline for another CPU
		{cpu: 0, seq: 15, lost: 3, news: true}, // 12, 13, 14 lost silently
		{cpu: 1, seq: 501},
		{cpu: 0, seq: 15},                             // repeat
		{cpu: 0, seq: 0xffffffff},                     // backwards: new baseline
		{cpu: 0, seq: 1, lost: 1, news: true},         // wrapped past 0: seq 0 lost
		{cpu: 1, seq: 400},                            // backwards
		{cpu: 1, seq: 1401, lost: 1000, expect: true}, // the loss ENOBUFS reported
		{cpu: 0, seq: 3, lost: 1},                     // expected on this CPU too
		{cpu: 0, seq: 5, lost: 1, news: true},         // but only once
	}
	for i, s := range steps {
		if s.expect {
			g.Expect()
		}
		lost, news := g.Observe(s.cpu, s.seq)
		if lost != s.lost || news != s.news {
			t.Fatalf("step %d: Observe(%d, %d) = %d, %v; want %d, %v", i, s.cpu, s.seq, lost, news, s.lost, s.news)
		}
	}
}

func TestSubscribeMsg(t *testing.T) {
	got := subscribeMsg(0x01020304, mcastListen)
	want := []byte{
		0x01, 0x00, 0x00, 0x00, // idx
		0x01, 0x00, 0x00, 0x00, // val
		0x04, 0x03, 0x02, 0x01, // seq
		0x04, 0x03, 0x02, 0x01, // ack: the same token; the reply carries it + 1
		0x04, 0x00, // len: 4, the bare op
		0x00, 0x00, // flags
		0x01, 0x00, 0x00, 0x00, // PROC_CN_MCAST_LISTEN
	}
	if string(got) != string(want) {
		t.Fatalf("got %x\nwant %x", got, want)
	}
}

func BenchmarkDecode(b *testing.B) {
	msgs := [][]byte{forkEvent, execEvent, commEvent, exitEvent}
	var ev Event
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := Decode(msgs[i&3], &ev); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range [][]byte{forkEvent, threadForkEvent, execEvent, commEvent, exitEvent, ackEvent, uidEvent, nil} {
		f.Add(s)
		f.Add(nlmsg(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := Decode(b, &ev); err == nil && ev.Type == Fork && len(b) < cnMsgLen+procHdrLen+16 {
			t.Fatalf("decoded a fork from %d bytes", len(b))
		}
		_ = Datagram(b, func(p []byte) { _ = Decode(p, &ev) })
	})
}
