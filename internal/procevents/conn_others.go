//go:build !linux

package procevents

import (
	"errors"
	"runtime"
	"time"
)

var (
	ErrNotAcknowledged = errors.New("procevents: not acknowledged")
	ErrOverrun         = errors.New("procevents: receive buffer overrun, events lost")
)

// Config configures Dial.
type Config struct {
	ReadBuffer int
	AckTimeout time.Duration
	OnForged   func(senderPort uint32)
}

// Stats are counters kept by Conn.
type Stats struct{ Lost, Overruns, Bad, Forged uint64 }

// Conn is not implemented outside Linux.
type Conn struct{}

// Dial returns an error: the proc connector is Linux only.
func Dial(Config) (*Conn, error) {
	return nil, errors.New("procevents: not implemented on " + runtime.GOOS)
}

func (c *Conn) Read(func(*Event)) error { return errors.New("procevents: not implemented") }
func (c *Conn) Close() error            { return nil }
func (c *Conn) Stats() Stats            { return Stats{} }
func (c *Conn) ReadBuffer() int         { return 0 }
func (c *Conn) Interrupt() error        { return nil }
