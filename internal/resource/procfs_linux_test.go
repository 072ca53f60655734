package resource

import (
	"errors"
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
	r := NewProcReader("/proc", AnonRSS)
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
	if _, err := r.Read(pid, tracker.Start{NS: start.NS + int64(time.Second)}); !errors.Is(err, tracker.ErrGone) {
		t.Errorf("wrong start: %v", err)
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
