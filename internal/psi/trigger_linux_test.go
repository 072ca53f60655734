//go:build linux

package psi_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/psi/psitest"
	"golang.org/x/sys/unix"
)

func needPSI(t *testing.T) {
	t.Helper()
	msg := ""
	switch {
	case os.Geteuid() != 0:
		msg = "needs root to register a PSI trigger on /proc/pressure/memory"
	default:
		if _, err := os.Stat("/proc/pressure/memory"); err != nil {
			msg = fmt.Sprintf("kernel without PSI: %v", err)
		}
	}
	if msg == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// testSpec is "some 100ms 1s" when this process may register any window,
// else the same share of a 2 s window (see psi.Privileged).
func testSpec(t *testing.T) psi.Spec {
	s := "some 100ms 1s"
	if !psi.Privileged() {
		s = "some 200ms 2s"
	}
	spec, err := psi.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trigger %s (CAP_SYS_RESOURCE: %v)", spec, psi.Privileged())
	return spec
}

// waitAsync runs tr.Wait in a goroutine.
func waitAsync(tr *psi.Trigger) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- tr.Wait() }()
	return ch
}

// TestTriggerFires: real pressure from the rig wakes a real trigger, and
// Close unblocks a Wait that nothing wakes.
func TestTriggerFires(t *testing.T) {
	needPSI(t)
	tr, err := psi.Open("/proc/pressure/memory", testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// Before the rig the box is idle: the trigger must not have fired
	// (someone else's pressure would make this flaky, so only log it).
	ch := waitAsync(tr)
	select {
	case err := <-ch:
		t.Logf("fired before the rig started (other load on the machine?): %v", err)
		ch = waitAsync(tr)
	case <-time.After(1500 * time.Millisecond):
	}
	start := time.Now()
	psitest.Start(t, psitest.Options{})
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(60 * time.Second):
		p, _ := tr.Read()
		t.Fatalf("no trigger within 60s of real pressure; pressure now %+v", p)
	}
	p, err := tr.Read()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fired %v after the rig started; some avg10=%.2f full avg10=%.2f", time.Since(start), p.Some.Avg10, p.Full.Avg10)
	// The kernel fires at most once a window, and keeps firing while the
	// pressure lasts.
	fired := time.Now()
	if err := tr.Wait(); err != nil {
		t.Fatal(err)
	}
	if gap := time.Since(fired); gap > 30*time.Second {
		t.Fatalf("second firing after %v under continuous pressure", gap)
	}
}

func TestTriggerClose(t *testing.T) {
	needPSI(t)
	spec, _ := psi.ParseSpec("full 10s 10s") // never fires on a sane box
	tr, err := psi.Open("/proc/pressure/memory", spec)
	if err != nil {
		t.Fatal(err)
	}
	ch := waitAsync(tr)
	time.Sleep(100 * time.Millisecond) // let it enter poll; Close is correct either way
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		if !errors.Is(err, psi.ErrClosed) {
			t.Fatalf("Wait after Close = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Wait")
	}
	if err := tr.Wait(); !errors.Is(err, psi.ErrClosed) {
		t.Fatalf("Wait on a closed trigger = %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// TestKernelTruncatesTheLastByte documents why Open writes a NUL: without
// it psi_write drops the window's last digit ("some 150000 200000": 200 ms,
// below the minimum) and the kernel refuses the trigger it accepts with
// the NUL.
func TestKernelTruncatesTheLastByte(t *testing.T) {
	needPSI(t)
	for _, tc := range []struct {
		line string
		want error
	}{{"some 150000 2000000", unix.EINVAL}, {"some 150000 2000000\x00", nil}} {
		fd, err := unix.Open("/proc/pressure/memory", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, []byte(tc.line)); !errors.Is(err, tc.want) && err != tc.want {
			t.Errorf("write %q = %v; want %v (if this kernel now keeps the last byte, the comment in Open is stale)", tc.line, err, tc.want)
		}
		unix.Close(fd)
	}
}

// TestUnprivilegedWindow: without CAP_SYS_RESOURCE a 1 s window is refused,
// and the error says what to do.
func TestUnprivilegedWindow(t *testing.T) {
	needPSI(t)
	if psi.Privileged() {
		t.Skip("this process has CAP_SYS_RESOURCE: every window from 500ms to 10s is allowed")
	}
	spec, _ := psi.ParseSpec("some 100ms 1s")
	tr, err := psi.Open("/proc/pressure/memory", spec)
	if err == nil {
		tr.Close()
		t.Fatal("a 1s window was accepted without CAP_SYS_RESOURCE")
	}
	if !errors.Is(err, psi.ErrWindow) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Open = %v; want ErrWindow wrapping EINVAL", err)
	}
}

// TestTriggerGone: a trigger on a cgroup's memory.pressure reports ErrGone
// when the cgroup is removed.
func TestTriggerGone(t *testing.T) {
	needPSI(t)
	unified := "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(unified, "cgroup.controllers")); err != nil {
		unified = "/sys/fs/cgroup/unified"
	}
	if _, err := os.Stat(filepath.Join(unified, "memory.pressure")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no cgroup v2 hierarchy with memory.pressure: %v", err)
		}
		t.Skipf("no cgroup v2 hierarchy with memory.pressure: %v", err)
	}
	dir := filepath.Join(unified, fmt.Sprintf("psi-gone-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	tr, err := psi.Open(filepath.Join(dir, "memory.pressure"), testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ch := waitAsync(tr)
	time.Sleep(100 * time.Millisecond)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		if !errors.Is(err, psi.ErrGone) {
			t.Fatalf("Wait after rmdir = %v; want ErrGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("removing the cgroup did not end Wait")
	}
}
