package store

import (
	"errors"
	"fmt"
	"path/filepath"
)

// LockFile is the file in the state directory that its owner holds locked.
const LockFile = "lock"

// ErrLocked is returned by LockDir when another process holds the state
// directory.
var ErrLocked = errors.New("state dir is in use")

// LockedError names the process that holds a state directory.
type LockedError struct {
	Dir string
	PID int // 0 when the holder has not written it yet
}

func (e *LockedError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = fmt.Sprintf("PID %d", e.PID)
	}
	return fmt.Sprintf("state dir %s is in use by %s (it holds %s); one daemon or `once` per state dir",
		e.Dir, holder, filepath.Join(e.Dir, LockFile))
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// UnwritableError is LockDir finding a state directory it can neither
// create nor write a lock file in (a read-only mount, a full disk): the
// release it returns does nothing, and the caller may run on without the
// lock, holding what it would write in memory.
type UnwritableError struct {
	Dir string
	Err error
}

func (e *UnwritableError) Error() string {
	return fmt.Sprintf("state dir %s cannot be written (%v): running without its lock", e.Dir, e.Err)
}

func (e *UnwritableError) Unwrap() error { return e.Err }
