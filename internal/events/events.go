package events

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/store"
)

// Type names a kind of event, as the "type" field and ?types= spell it.
type Type string

// The event types.
const (
	TypeAgent    Type = "agent"    // an agent was found and queued, with its deadline
	TypeDeadline Type = "deadline" // a queued deadline moved (reload, extend)
	TypeLeftover Type = "leftover" // a session member outlived its agent and is queued to be killed
	TypeKill     Type = "kill"     // a reap finished: the full kill record
	TypeSnapshot Type = "snapshot" // a health snapshot was taken: the health row
	TypeResync   Type = "resync"   // the table was rebuilt from /proc after lost events
	TypePressure Type = "pressure" // the kernel reported resource pressure (reserved)
	TypeLost     Type = "lost"     // the kernel dropped proc connector events
)

// AllTypes lists every type, in the order documentation shows them.
var AllTypes = []Type{TypeAgent, TypeDeadline, TypeLeftover, TypeKill, TypeSnapshot, TypeResync, TypePressure, TypeLost}

// Types is a set of event types.
type Types uint16

// All is every type.
var All = func() Types {
	var s Types
	for _, t := range AllTypes {
		s |= t.bit()
	}
	return s
}()

func (t Type) bit() Types {
	for i, u := range AllTypes {
		if u == t {
			return 1 << i
		}
	}
	return 0
}

// Has reports whether t is in s.
func (s Types) Has(t Type) bool { return s&t.bit() != 0 }

// Len is the number of types in s.
func (s Types) Len() int { return bits.OnesCount16(uint16(s)) }

// String lists the types in s, comma-separated.
func (s Types) String() string {
	var names []string
	for _, t := range AllTypes {
		if s.Has(t) {
			names = append(names, string(t))
		}
	}
	return strings.Join(names, ",")
}

// ParseTypes parses a comma-separated list of types; empty means All.
// Blank items are ignored; an unknown type is an error that names it.
func ParseTypes(list string) (Types, error) {
	var s Types
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		b := Type(name).bit()
		if b == 0 {
			return 0, fmt.Errorf("unknown event type %q (want some of %s)", name, All)
		}
		s |= b
	}
	if s == 0 {
		return All, nil
	}
	return s, nil
}

// Header is the part every event shares. Publish fills it in.
type Header struct {
	Type Type      `json:"type"`
	Time time.Time `json:"time"` // when the daemon published it (UTC)
}

func (h *Header) header() *Header { return h }

// Event is one of the event structs below, by pointer.
type Event interface {
	// Kind is the event's type.
	Kind() Type
	header() *Header
}

// Agent: a process matched an agent rule and was queued with its deadline.
type Agent struct {
	Header
	PID        int32     `json:"pid"`
	Comm       string    `json:"comm"`
	Cmdline    string    `json:"cmdline"`
	Rule       string    `json:"rule"`
	StartedAt  time.Time `json:"started_at"`
	Deadline   time.Time `json:"deadline"`
	SessionPID int32     `json:"session_pid,omitempty"` // the session's agent: itself, or an outer agent for a nested one
	// cgroup, container_id, pod_uid: where it runs, where known.
	cgroupinfo.Info
}

// Deadline: a queued deadline moved.
type Deadline struct {
	Header
	PID        int32     `json:"pid"`
	Comm       string    `json:"comm"`
	Rule       string    `json:"rule"`
	Reason     string    `json:"reason"` // what the deadline is for: max_age, leftover, ...
	Cause      string    `json:"cause"`  // what moved it: reload, extend, ...
	Previous   time.Time `json:"previous"`
	Deadline   time.Time `json:"deadline"`
	SessionPID int32     `json:"session_pid,omitempty"`
}

// Leftover: a session member outlived its agent and is queued to be killed
// at KillAt (the agent's exit + the leftover grace).
type Leftover struct {
	Header
	PID        int32     `json:"pid"`
	Comm       string    `json:"comm"`
	Cmdline    string    `json:"cmdline"`
	Rule       string    `json:"rule"` // the session agent's rule
	SessionPID int32     `json:"session_pid"`
	KillAt     time.Time `json:"kill_at"`
	cgroupinfo.Info
}

// Kill: a reap finished. The fields are the kill record's, as stored in
// tel.agent_kills.
type Kill struct {
	Header
	store.KillRow
}

// Snapshot: a health snapshot was taken; the fields are the health row's.
type Snapshot struct {
	Header
	Status      string          `json:"status"`
	Details     json.RawMessage `json:"details"`
	ActionTaken *string         `json:"action_taken"`
}

// Resync: the kernel dropped events and the table was rebuilt from /proc.
type Resync struct {
	Header
	TookMS     float64 `json:"took_ms"`
	Processes  int     `json:"processes"`         // in the table after the rebuild
	EventsLost uint64  `json:"events_lost_total"` // dropped since the daemon started, as counted so far
	Resyncs    uint64  `json:"resyncs_total"`
}

// Pressure is reserved for the resource policies: the kernel reported
// pressure (PSI) on a resource.
type Pressure struct {
	Header
	Resource   string  `json:"resource"` // memory, cpu, io
	SomeAvg10  float64 `json:"some_avg10"`
	FullAvg10  float64 `json:"full_avg10"`
	SessionPID int32   `json:"session_pid,omitempty"` // the session blamed, if any
}

// Lost: the kernel dropped proc connector events (sequence gaps or a full
// receive buffer); a resync follows.
type Lost struct {
	Header
	Events uint64 `json:"events"` // dropped in this gap
	Total  uint64 `json:"total"`  // dropped since the daemon started
}

func (*Agent) Kind() Type    { return TypeAgent }
func (*Deadline) Kind() Type { return TypeDeadline }
func (*Leftover) Kind() Type { return TypeLeftover }
func (*Kill) Kind() Type     { return TypeKill }
func (*Snapshot) Kind() Type { return TypeSnapshot }
func (*Resync) Kind() Type   { return TypeResync }
func (*Pressure) Kind() Type { return TypePressure }
func (*Lost) Kind() Type     { return TypeLost }

// Compile-time checks: every event is an Event.
var (
	_ Event = (*Agent)(nil)
	_ Event = (*Deadline)(nil)
	_ Event = (*Leftover)(nil)
	_ Event = (*Kill)(nil)
	_ Event = (*Snapshot)(nil)
	_ Event = (*Resync)(nil)
	_ Event = (*Pressure)(nil)
	_ Event = (*Lost)(nil)
)

// New is a new, empty event of type t, to decode one into; nil for a type
// it does not know.
func New(t Type) Event {
	for _, ev := range []Event{new(Agent), new(Deadline), new(Leftover), new(Kill), new(Snapshot), new(Resync), new(Pressure), new(Lost)} {
		if ev.Kind() == t {
			return ev
		}
	}
	return nil
}

// AppendJSON appends ev as one line of JSON (with its newline) to buf.
func AppendJSON(buf []byte, ev Event) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return buf, fmt.Errorf("marshal %s event: %w", ev.Kind(), err)
	}
	buf = append(buf, b...)
	return append(buf, '\n'), nil
}
