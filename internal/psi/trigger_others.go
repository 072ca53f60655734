//go:build !linux

package psi

import (
	"errors"
	"runtime"
)

// Trigger is a registered PSI trigger; PSI is Linux only.
type Trigger struct{}

// Open reports that PSI is Linux only.
func Open(path string, spec Spec) (*Trigger, error) {
	return nil, errors.New("psi triggers are not implemented on " + runtime.GOOS)
}

func (t *Trigger) Path() string            { return "" }
func (t *Trigger) Spec() Spec              { return Spec{} }
func (t *Trigger) Wait() error             { return ErrClosed }
func (t *Trigger) Read() (Pressure, error) { return Pressure{}, ErrNoPSI }
func (t *Trigger) Close() error            { return nil }

// Privileged is false: PSI is Linux only.
func Privileged() bool { return false }
