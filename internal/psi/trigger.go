package psi

import "errors"

// Errors Wait returns besides a failed poll.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("psi trigger closed")
	// ErrGone: the kernel reported POLLERR or POLLHUP on the descriptor.
	// A cgroup's pressure file does this when the cgroup is removed
	// (kernfs deactivates the file, psi_trigger_destroy wakes its waiters
	// with POLLFREE); the trigger has to be registered again elsewhere.
	ErrGone = errors.New("psi trigger: the pressure file went away")
	// ErrWindow: the kernel refused a window that is not a multiple of
	// 2 s from a process without CAP_SYS_RESOURCE.
	ErrWindow = errors.New("without CAP_SYS_RESOURCE the kernel accepts only windows that are a multiple of 2s (e.g. \"some 300ms 2s\"): choose such a window or grant the capability")
)
