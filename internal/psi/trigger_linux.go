//go:build linux

package psi

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Trigger is a registered PSI trigger: one descriptor on a pressure file.
// Wait blocks in poll(2) until the kernel raises POLLPRI. A Trigger is used
// by one waiting goroutine; Close may be called from any.
type Trigger struct {
	path string
	spec Spec
	fd   int // the pressure file, with the trigger written to it
	wake int // an eventfd: Close writes it to end a Wait

	mu     sync.Mutex
	closed bool
	busy   sync.WaitGroup // a Wait in poll: its descriptors stay open
}

// Open registers spec on the pressure file at path. The kernel keeps a
// trigger for as long as the descriptor is open (psi.rst); one descriptor
// holds at most one trigger (a second write is EBUSY).
func Open(path string, spec Spec) (*Trigger, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// psi_write copies at most 32 bytes and overwrites the last byte it
	// copied with NUL (kernel/sched/psi.c): without a NUL of our own the
	// window would lose its last digit. psi.rst's example writes
	// strlen + 1 for the same reason.
	line := append([]byte(spec.Kernel()), 0)
	if _, err := unix.Write(fd, line); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) && !spec.Unprivileged() && !Privileged() {
			return nil, fmt.Errorf("register psi trigger %q on %s: %w: %w", spec.Kernel(), path, err, ErrWindow)
		}
		return nil, fmt.Errorf("register psi trigger %q on %s: %w", spec.Kernel(), path, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &Trigger{path: path, spec: spec, fd: fd, wake: wake}, nil
}

// Path is the pressure file the trigger is on.
func (t *Trigger) Path() string { return t.path }

// Spec is the trigger registered.
func (t *Trigger) Spec() Spec { return t.spec }

// Wait blocks until the trigger fires (nil), Close is called (ErrClosed)
// or the file goes away (ErrGone). The kernel clears the event as poll
// reports it (psi_trigger_poll), and fires at most once per window.
func (t *Trigger) Wait() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.busy.Add(1)
	t.mu.Unlock()
	defer t.busy.Done()
	fds := []unix.PollFd{{Fd: int32(t.fd), Events: unix.POLLPRI}, {Fd: int32(t.wake), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue // Go's preemption signal
		}
		if err != nil {
			return fmt.Errorf("poll %s: %w", t.path, err)
		}
		if fds[1].Revents != 0 {
			return ErrClosed
		}
		r := fds[0].Revents
		switch {
		case r&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0:
			return ErrGone
		case r&unix.POLLPRI != 0:
			return nil
		}
	}
}

// Read reads the pressure file's current figures.
func (t *Trigger) Read() (Pressure, error) {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return Pressure{}, err
	}
	return Parse(b)
}

// Close ends a Wait in progress, then removes the trigger (closing the
// descriptor is what unregisters it). It is safe to call more than once.
func (t *Trigger) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(t.wake, one[:]) // an eventfd counter; cannot block at 1
	t.busy.Wait()
	err := unix.Close(t.fd)
	unix.Close(t.wake)
	return err
}

// capSysResource is CAP_SYS_RESOURCE (include/uapi/linux/capability.h).
const capSysResource = 24

// Privileged reports whether this process may register triggers of any
// window: psi_trigger_create asks for CAP_SYS_RESOURCE in the effective
// set of whoever opened the file (Linux 6.4+); without it the window must
// be a multiple of 2 s. Containers commonly drop this capability, root or
// not (Docker's default set does).
func Privileged() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<capSysResource) != 0
}
