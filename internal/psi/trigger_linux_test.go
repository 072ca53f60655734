//go:build linux

package psi_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
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

// open registers a trigger of spec on path, closed when the test ends.
func open(t *testing.T, path string, spec psi.Spec) *psi.Trigger {
	t.Helper()
	tr, err := psi.Open(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// ended wants the Wait whose result ch carries to end within d with want
// (nil: the trigger fired); else the test fails saying late.
func ended(t *testing.T, ch <-chan error, want error, d time.Duration, late string) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, want) {
			t.Fatalf("Wait = %v; want %v", err, want)
		}
	case <-time.After(d):
		t.Fatal(late)
	}
}

// waitInPoll runs tr.Wait in a goroutine on a thread of its own and returns
// once that thread sleeps in poll(2) (its wchan, /proc/self/task/TID/wchan,
// names a poll function): whatever the test does next happens to a Wait
// already blocked in the kernel.
func waitInPoll(t *testing.T, tr *psi.Trigger) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	tids := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		tids <- unix.Gettid()
		ch <- tr.Wait()
	}()
	wchan := fmt.Sprintf("/proc/self/task/%d/wchan", <-tids)
	for end := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile(wchan)
		if strings.Contains(string(b), "poll") {
			return ch
		}
		select {
		case err := <-ch:
			t.Fatalf("Wait returned before blocking: %v", err)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("the waiting thread never slept in poll (wchan %q)", b)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTriggerFires: real pressure from the rig wakes a real trigger, and
// Close unblocks a Wait that nothing wakes.
func TestTriggerFires(t *testing.T) {
	needPSI(t)
	tr := open(t, "/proc/pressure/memory", testSpec(t))
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
	tr := open(t, "/proc/pressure/memory", spec)
	ch := waitInPoll(t, tr)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	ended(t, ch, psi.ErrClosed, 5*time.Second, "Close did not end Wait")
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

// withoutSysResource runs f on a thread of its own whose effective
// capabilities lack CAP_SYS_RESOURCE (capset(2) acts on the calling thread
// alone; the thread is never unlocked, so Go ends it with the goroutine and
// no other goroutine runs with the reduced set). psi_trigger_create checks
// the opener's credentials (file->f_cred), so a pressure file opened in f
// is an unprivileged opener's. Where the capability is absent already, f
// runs as it is.
func withoutSysResource(t *testing.T, f func()) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- fmt.Sprintf("capget: %v", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_RESOURCE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- fmt.Sprintf("capset: %v", err)
			return
		}
		if psi.Privileged() {
			done <- "CAP_SYS_RESOURCE still effective after capset"
			return
		}
		f()
		done <- ""
	}()
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
}

// windowRule checks the kernel's window rule for this process: with
// CAP_SYS_RESOURCE (when it has it) the exact "some 100ms 1s" is
// accepted; without it (dropped for the check where it is present) that
// window is refused with ErrWindow and a multiple of 2 s is accepted.
func windowRule(t *testing.T) {
	t.Helper()
	oneSec, _ := psi.ParseSpec("some 100ms 1s")
	twoSec, _ := psi.ParseSpec("some 200ms 2s")
	if psi.Privileged() {
		tr, err := psi.Open("/proc/pressure/memory", oneSec)
		if err != nil {
			t.Fatalf("with CAP_SYS_RESOURCE, %s refused: %v", oneSec, err)
		}
		tr.Close()
	}
	withoutSysResource(t, func() {
		tr, err := psi.Open("/proc/pressure/memory", oneSec)
		if err == nil {
			tr.Close()
			t.Error("a 1s window was accepted without CAP_SYS_RESOURCE")
		} else if !errors.Is(err, psi.ErrWindow) || !errors.Is(err, unix.EINVAL) {
			t.Errorf("Open = %v; want ErrWindow wrapping EINVAL", err)
		}
		tr, err = psi.Open("/proc/pressure/memory", twoSec)
		if err != nil {
			t.Errorf("without CAP_SYS_RESOURCE, %s refused: %v", twoSec, err)
			return
		}
		tr.Close()
	})
}

// TestUnprivilegedWindow: without CAP_SYS_RESOURCE a 1 s window is refused,
// and the error says what to do; a 2 s one is accepted. Where this process
// has the capability it is dropped for the check (withoutSysResource).
func TestUnprivilegedWindow(t *testing.T) {
	needPSI(t)
	t.Logf("CAP_SYS_RESOURCE: %v", psi.Privileged())
	windowRule(t)
}

// userNSEnv marks the test binary re-run in a user namespace by
// TestPrivilegedWindow.
const userNSEnv = "PSI_TEST_IN_USERNS"

// TestPrivilegedWindow: the exact trigger, "some 100ms 1s" (the
// real-time poller, which only CAP_SYS_RESOURCE may ask for), registers and
// fires under real pressure. Without the capability (a container's root,
// as on the test VM) it runs in a child in a new user namespace: the
// namespace's owner has every capability in its credentials, and
// psi_trigger_create asks cap_raised(file->f_cred->cap_effective, ...),
// which does not look at the namespace — so the child may, and runs both
// halves of the window rule there, the drop included.
func TestPrivilegedWindow(t *testing.T) {
	needPSI(t)
	if os.Getenv(userNSEnv) == "1" {
		return // the child's part is TestPrivilegedWindowChild
	}
	if psi.Privileged() {
		windowRule(t)
		spec, _ := psi.ParseSpec("some 100ms 1s")
		tr := open(t, "/proc/pressure/memory", spec)
		ch := waitAsync(tr)
		psitest.Start(t, psitest.Options{})
		ended(t, ch, nil, 60*time.Second, "a some 100ms 1s trigger did not fire within 60s of real pressure")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedWindowChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), userNSEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		msg := fmt.Sprintf("no CAP_SYS_RESOURCE here, and no user namespace to get it in: %v", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) // our child, not yet reaped
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log []string
	next := func(want string, within time.Duration) {
		t.Helper()
		end := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the child ended before %q:\n%s", want, strings.Join(log, "\n"))
				}
				log = append(log, l)
				if strings.Contains(l, want) {
					return
				}
			case <-end:
				t.Fatalf("no %q from the child within %v:\n%s", want, within, strings.Join(log, "\n"))
			}
		}
	}
	next("PSI-CHILD registered", 30*time.Second)
	psitest.Start(t, psitest.Options{}) // the rig needs the real root; the child only waits
	next("PSI-CHILD fired", 90*time.Second)
	next("--- PASS: TestPrivilegedWindowChild", 10*time.Second)
	for _, l := range log {
		if strings.Contains(l, "PSI-CHILD") || strings.Contains(l, "window_test") {
			t.Log("child: " + strings.TrimSpace(l))
		}
	}
}

// TestPrivilegedWindowChild is TestPrivilegedWindow's part in the user
// namespace; run directly it does nothing.
func TestPrivilegedWindowChild(t *testing.T) {
	if os.Getenv(userNSEnv) != "1" {
		return
	}
	if !psi.Privileged() {
		t.Fatal("no CAP_SYS_RESOURCE in the user namespace's owner")
	}
	windowRule(t)
	spec, _ := psi.ParseSpec("some 100ms 1s")
	tr := open(t, "/proc/pressure/memory", spec)
	fmt.Println("PSI-CHILD registered", spec.Kernel())
	start := time.Now()
	ch := waitAsync(tr)
	ended(t, ch, nil, 80*time.Second, "no trigger within 80s")
	p, _ := tr.Read()
	fmt.Printf("PSI-CHILD fired %v after registering; some avg10=%.2f\n", time.Since(start).Round(time.Millisecond), p.Some.Avg10)
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
	tr := open(t, filepath.Join(dir, "memory.pressure"), testSpec(t))
	ch := waitInPoll(t, tr) // blocked in the kernel when the group goes
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	ended(t, ch, psi.ErrGone, 5*time.Second, "removing the cgroup did not end Wait")
	// A Wait that starts after the removal gets POLLERR at once too.
	ended(t, waitAsync(tr), psi.ErrGone, 5*time.Second, "Wait on a removed group's file blocked")
}
