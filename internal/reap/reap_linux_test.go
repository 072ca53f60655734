//go:build linux

package reap

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

func procFS(t *testing.T) *tracker.ProcFS {
	t.Helper()
	p, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func child(t *testing.T) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// TestPinChecksIdentity: a pidfd is only handed out for the process that
// started when the tracker says; another start time is a reused PID.
func TestPinChecksIdentity(t *testing.T) {
	procs := procFS(t)
	c := child(t)
	pid := int32(c.Process.Pid)
	info, err := procs.Stat(pid)
	if err != nil {
		t.Fatal(err)
	}
	pins := NewPins(procs, nil)
	fd, err := pins.pin(pid, info.Start, 1<<30)
	if err != nil {
		t.Fatalf("pin with the right start: %v", err)
	}
	defer unix.Close(fd)

	wrong := tracker.Start{NS: info.Start.NS - 10*tracker.Tick}
	if fd2, err := pins.pin(pid, wrong, 1<<30); !errors.Is(err, ErrReused) || !errors.Is(err, tracker.ErrGone) {
		unix.Close(fd2)
		t.Fatalf("pin with another start: %v, want ErrReused", err)
	}

	// Signals go through the pidfd; once the process is gone and reaped,
	// the pidfd reports it instead of reaching whoever gets the PID next.
	if err := signal(fd, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exitCh := make(chan struct{})
	id, err := exits.add(fd, func() { close(exitCh) })
	if err != nil {
		t.Fatal(err)
	}
	defer exits.remove(id)
	select {
	case <-exitCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the exit watcher did not report the exit")
	}
	if !hasExited(fd) {
		t.Fatal("pidfd not readable after the process exited")
	}
	c.Wait()
	if err := signal(fd, unix.SIGTERM); !errors.Is(err, tracker.ErrGone) {
		t.Fatalf("signal after exit: %v, want ErrGone", err)
	}
	if _, err := pins.pin(pid, info.Start, 1<<30); !errors.Is(err, tracker.ErrGone) {
		t.Fatalf("pin after exit: %v, want ErrGone", err)
	}
}

func TestGuard(t *testing.T) {
	g, err := NewGuard(procFS(t))
	if err != nil {
		t.Fatal(err)
	}
	c := child(t)
	for _, p := range []int32{0, 1, int32(os.Getpid()), int32(os.Getppid())} {
		if g.Allowed(p, false) {
			t.Errorf("pid %d allowed", p)
		}
	}
	if !g.Allowed(int32(c.Process.Pid), false) {
		t.Error("own child refused")
	}
	if g.Allowed(int32(c.Process.Pid), true) {
		t.Error("kernel thread allowed")
	}
}
