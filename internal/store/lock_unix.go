//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockDir makes this process the one owner of the state directory dir
// (created if missing): an exclusive, non-blocking flock(2) on dir/lock,
// which then holds our PID. A second owner gets a *LockedError (ErrLocked)
// naming the holder. The kernel drops the lock when the holder exits,
// however it exits, so a crash never leaves the directory locked; the file
// itself stays (removing it would let two processes lock two different
// files of one name).
func LockDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if _, serr := os.Stat(dir); serr != nil {
			return func() {}, &UnwritableError{Dir: dir, Err: err}
		}
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		// A state dir that cannot be written (read-only, full) stops
		// nothing: the lock is taken on the file as it is, read-only
		// (flock needs no write access); without one, the caller runs
		// unlocked (*UnwritableError) and says so.
		werr := err
		if f, err = os.Open(path); err != nil {
			return func() {}, &UnwritableError{Dir: dir, Err: werr}
		}
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		b, _ := os.ReadFile(path)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		f.Close()
		return nil, &LockedError{Dir: dir, PID: pid}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Our PID, for the message a second owner prints. Written in place
	// (truncate, write): the lock is on this inode.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
