//go:build linux

package procevents

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
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

func BenchmarkIntegrationRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	c, err := Dial(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Read(func(*Event) {})
	}
}
