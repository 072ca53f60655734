package resource

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// A real process: its anon RSS grows with what it touches; a wrong start
// time or an exited process is ErrGone.
func TestProcReaderReal(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 0.2; x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := int32(cmd.Process.Pid)
	raw, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ParseStat(raw)
	start := tracker.FromTicks(st.StartTicks)
	r := NewProcReader("/proc")
	u0, err := r.Read(pid, start)
	if err != nil {
		t.Fatal(err)
	}
	var u Usage
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if u, err = r.Read(pid, start); err != nil {
			t.Fatal(err)
		}
		if u.MemoryBytes > 35<<20 {
			break
		}
	}
	if u.MemoryBytes < 35<<20 || u.MemoryBytes <= u0.MemoryBytes {
		t.Fatalf("anon RSS %d after touching 40 MB (before: %d)", u.MemoryBytes, u0.MemoryBytes)
	}
	// Now idle (sh waits for sleep): the clock alone, statm again every
	// refreshEvery+1 reads. Wait for the CPU clock to stand still first.
	r.refreshEvery = 2
	h := r.held[memberKey{pid, start.NS}]
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		before := h.cpu
		if _, err := r.Read(pid, start); err != nil {
			t.Fatal(err)
		}
		if h.cpu == before && h.skips > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process never went idle")
		}
	}
	var skips []uint8
	for range 4 {
		v, err := r.Read(pid, start)
		if err != nil {
			t.Fatal(err)
		}
		if v.MemoryBytes < 35<<20 {
			t.Fatalf("idle read: anon RSS %d", v.MemoryBytes)
		}
		skips = append(skips, h.skips)
	}
	if got := fmt.Sprint(skips); got != "[2 0 1 2]" && got != "[0 1 2 0]" {
		t.Errorf("idle reads: skips %s, want statm read again every 3rd read", got)
	}
	if _, err := r.Read(pid, tracker.Start{NS: start.NS + int64(time.Second)}); !errors.Is(err, tracker.ErrGone) {
		t.Errorf("wrong start: %v", err)
	}
	if u.CPUNanos == 0 || r.Held() != 1 {
		t.Errorf("cpu %d ns, %d descriptors held", u.CPUNanos, r.Held())
	}
	r.Sweep()
	r.Sweep() // not read since the last one: closed
	if r.Held() != 0 {
		t.Errorf("%d descriptors held after a sweep", r.Held())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := r.Read(pid, start); !errors.Is(err, tracker.ErrGone) {
		t.Errorf("after exit: %v", err)
	}
}

func itoa(p int32) string { return string(appendInt(nil, int64(p))) }

func appendInt(b []byte, v int64) []byte {
	if v >= 10 {
		b = appendInt(b, v/10)
	}
	return append(b, byte('0'+v%10))
}

// A statm descriptor numbered at or above the cap (the reaper's rule) is
// read once and closed, never held: the reaper's pidfds keep their room.
func TestProcReaderDescriptorCap(t *testing.T) {
	pid := int32(os.Getpid())
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ParseStat(raw)
	start := tracker.FromTicks(st.StartTicks)
	r := NewProcReader("/proc")
	if r.fdCap <= 0 || r.fdCap > r.maxHeld*2+1 {
		t.Fatalf("cap %d, max held %d", r.fdCap, r.maxHeld)
	}
	r.fdCap = 3 // every descriptor is at or above it
	fds := func() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }
	before := fds()
	for range 3 {
		if u, err := r.Read(pid, start); err != nil || u.CPUNanos == 0 {
			t.Fatalf("read over the cap: %+v %v", u, err)
		}
	}
	if r.Held() != 0 || fds() != before {
		t.Errorf("over the cap: %d held, %d descriptors open (was %d)", r.Held(), fds(), before)
	}
}
