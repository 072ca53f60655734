package tracker

import "errors"

// The errors a caller of the table tells apart (errors.Is).
var (
	// ErrNoProcess means the table holds no live process with that PID
	// (and start time, when one was given).
	ErrNoProcess = errors.New("no such process")
	// ErrNotAgent means a kill was asked for a process that is neither an
	// agent nor a session member, without force.
	ErrNotAgent = errors.New("neither an agent nor a member of a session")
	// ErrExempt means the session's agent is root-kept (a --keep rule, a
	// keep through the control socket; marks.go): no policy kills it
	// for resources. REAPER_KEEP=1 exempts no session.
	ErrExempt = errors.New("session exempt: its agent is kept")
	// ErrKilling means the session is already being killed.
	ErrKilling = errors.New("session already being killed")
	// ErrNoSession means the table holds no session with that ID.
	ErrNoSession = errors.New("no such session")
)
