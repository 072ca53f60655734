//go:build linux

package procevents

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run as root: the proc connector needs CAP_NET_ADMIN")
		}
		t.Skip("skipped: subscribing to the proc connector needs root (CAP_NET_ADMIN); run as root")
	}
}

// TestIntegrationEvents subscribes for real and sees a child's fork, exec and
// exit, in that order, with the child's pid.
func TestIntegrationEvents(t *testing.T) {
	needRoot(t)
	c, err := Dial(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ReadBuffer() < 8<<20 {
		t.Errorf("receive buffer %d, want at least 8 MiB", c.ReadBuffer())
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := int32(cmd.Process.Pid)
	cmd.Wait()

	var seen []Type
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		c.c.SetReadDeadline(deadline)
		err := c.Read(func(ev *Event) {
			if ev.TGID == pid && ev.Leader() {
				seen = append(seen, ev.Type)
				if ev.Type == Fork && ev.ParentTGID != int32(os.Getpid()) {
					t.Errorf("fork parent %d, want %d", ev.ParentTGID, os.Getpid())
				}
				if ev.Timestamp == 0 {
					t.Error("zero timestamp")
				}
			}
		})
		if err != nil && !errors.Is(err, ErrOverrun) {
			t.Fatal(err)
		}
	}
	want := []Type{Fork, Exec, Exit}
	if len(seen) != 3 || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Fatalf("events for pid %d: %v, want %v", pid, seen, want)
	}
}

// forger is a user-space NETLINK_CONNECTOR socket, as any process with
// CAP_NET_ADMIN in the host network namespace may open.
type forger struct {
	fd   int
	port uint32
}

func newForger(t *testing.T) *forger {
	t.Helper()
	fd, port := testutil.ConnectorSocket(t)
	return &forger{fd: fd, port: port}
}

// send multicasts ev to CN_IDX_PROC's listeners, addressed as the kernel's
// own events are: nl_pid 0, nl_groups CN_IDX_PROC.
func (f *forger) send(t *testing.T, ev *Event) {
	t.Helper()
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+cnMsgLen+procEventSize)
	msg = Encode(msg, ev)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg))) // nlmsg_len
	binary.NativeEndian.PutUint16(msg[4:6], unix.NLMSG_DONE)  // nlmsg_type, as the kernel sends
	if err := unix.Sendto(f.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: 0, Groups: cnIdxProc}); err != nil {
		t.Fatalf("forge: sendto: %v", err)
	}
}

// TestIntegrationForgedDropped forges PROC_EVENT_COMM messages from a
// second socket: they reach the subscribed Conn (it counts them) but never
// its callback, and OnForged reports the forger's port once.
func TestIntegrationForgedDropped(t *testing.T) {
	needRoot(t)
	var mu sync.Mutex
	var ports []uint32
	c, err := Dial(Config{OnForged: func(p uint32) {
		mu.Lock()
		ports = append(ports, p)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := newForger(t)
	ev := Event{Type: Comm, Seq: 1, Timestamp: 1, PID: int32(os.Getpid()), TGID: int32(os.Getpid())}
	copy(ev.Comm[:], "forged-comm")
	f.send(t, &ev)
	f.send(t, &ev)

	deadline := time.Now().Add(10 * time.Second)
	c.c.SetReadDeadline(deadline)
	for c.Stats().Forged < 2 {
		err := c.Read(func(ev *Event) {
			if ev.Type == Comm && ev.CommString() == "forged-comm" {
				t.Errorf("forged comm event delivered: %+v", ev)
			}
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("forged messages counted %d, want 2 (did they reach the socket?)", c.Stats().Forged)
		}
		if err != nil && !errors.Is(err, ErrOverrun) {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ports) != 1 || ports[0] != f.port || f.port == 0 {
		t.Errorf("OnForged calls %v, want one with the forger's port %d", ports, f.port)
	}
	if st := c.Stats(); st.Forged != 2 || st.Bad != 0 {
		t.Errorf("stats %+v, want 2 forged, 0 bad", st)
	}
}

func TestFromKernel(t *testing.T) {
	for _, c := range []struct {
		from unix.RawSockaddrNetlink
		want bool
	}{
		{unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: 0, Groups: 1}, true},
		{unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: 4242, Groups: 1}, false},
		{unix.RawSockaddrNetlink{Family: unix.AF_NETLINK, Pid: 0x80000001}, false}, // an autobound port
		{unix.RawSockaddrNetlink{Family: unix.AF_UNSPEC}, false},                   // no address at all
		{unix.RawSockaddrNetlink{Family: unix.AF_INET}, false},
	} {
		if got := FromKernel(&c.from); got != c.want {
			t.Errorf("FromKernel(%+v) = %v, want %v", c.from, got, c.want)
		}
	}
}

// BenchmarkIntegrationRead reads real events: a locked thread renames
// itself in a loop, so the kernel sends a COMM event per prctl.
func BenchmarkIntegrationRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	c, err := Dial(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		name, _ := unix.BytePtrFromString("bench-rename")
		for {
			select {
			case <-stop:
				return
			default:
				unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	c.c.SetReadDeadline(time.Now().Add(time.Minute))
	fn := func(*Event) {}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Read(fn); err != nil && !errors.Is(err, ErrOverrun) {
			b.Fatal(err)
		}
	}
}
