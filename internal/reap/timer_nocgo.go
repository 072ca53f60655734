//go:build linux && !cgo

package reap

// Timer, in builds without cgo, is the locked Go thread of timer_go.go.
type Timer = goTimer

// NewTimer creates the timer and connects it to cfg.Queue.
func NewTimer(cfg TimerConfig) (*Timer, error) { return newGoTimer(cfg) }
