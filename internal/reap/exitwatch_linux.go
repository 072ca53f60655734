//go:build linux

package reap

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// exitWatch tells when processes exit, for any number of pidfds, from one
// goroutine blocked in epoll_wait(2): a pidfd becomes readable (EPOLLIN)
// once its process has exited (pidfd_open(2), Linux 5.3). Before, every
// kill in flight polled its own pidfds in a blocking poll(2), and every
// blocked poll held an OS thread: 3,000 agents due together parked 460
// threads and starved the rest.
//
// Why our own epoll loop rather than Go's netpoller (os.NewFile on the
// nonblocking pidfd, SyscallConn().Read): the netpoller would own each
// pidfd as an *os.File and close it itself, while a pidfd here is a plain
// int shared with the C deadline thread and handed from the queue to the
// reaper; and it would park a goroutine per process where one callback
// suffices. The cost is one thread, for the daemon's lifetime.
type exitWatch struct {
	once  sync.Once
	err   error
	epfd  int
	mu    sync.Mutex
	next  uint64
	watch map[uint64]watched
}

type watched struct {
	fd int
	fn func()
}

// exits is the daemon's one watcher, started on first use.
var exits exitWatch

func (w *exitWatch) start() error {
	w.once.Do(func() {
		w.epfd, w.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if w.err != nil {
			w.err = fmt.Errorf("epoll_create1: %w", w.err)
			return
		}
		w.watch = map[uint64]watched{}
		go w.loop()
	})
	return w.err
}

// add calls fn, from the watcher's goroutine, once fd's process has exited
// (at once if it has already). fn must not block. The caller must remove
// the watch before closing fd. An error (ENOMEM, ENOSPC past
// max_user_watches) leaves fd unwatched: poll it instead.
func (w *exitWatch) add(fd int, fn func()) (uint64, error) {
	if err := w.start(); err != nil {
		return 0, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next++
	id := w.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return 0, fmt.Errorf("epoll_ctl add pidfd: %w", err)
	}
	w.watch[id] = watched{fd: fd, fn: fn}
	return id, nil
}

// remove ends a watch (if it has not fired); fn is not called after it
// returns. Removing under the lock, before the caller closes fd, is what
// keeps a recycled fd number from being taken off the epoll set by a stale
// watch.
func (w *exitWatch) remove(id uint64) {
	if id == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if x, ok := w.watch[id]; ok {
		delete(w.watch, id)
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
	}
}

func (w *exitWatch) loop() {
	evs := make([]unix.EpollEvent, 256)
	fns := make([]func(), 0, len(evs))
	for {
		n, err := unix.EpollWait(w.epfd, evs, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue // Go's preemption signal, not an exit
			}
			panic(fmt.Sprintf("epoll_wait on pidfds: %v", err)) // EBADF/EINVAL: a bug, not a state
		}
		fns = fns[:0]
		w.mu.Lock()
		for _, ev := range evs[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if x, ok := w.watch[id]; ok {
				// An exit is for good: deregister now, so the level-
				// triggered readiness does not report it again.
				delete(w.watch, id)
				_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
				fns = append(fns, x.fn)
			}
		}
		w.mu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
}

// hasExited polls one pidfd without waiting: the fallback for a pidfd the
// watcher could not take.
func hasExited(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0 && p[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
}
