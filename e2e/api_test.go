package e2e

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

// What the daemon serves, as the tests read it: the fields of GET /agents
// and GET /healthz the tests look at (docs/operations.md describes them
// all). Declared here, not taken from the daemon's code, so that a change
// of the wire format fails a test.

// agentView is an entry of GET /agents.
type agentView struct {
	PID         int32          `json:"pid"`
	Comm        string         `json:"comm"`
	Cmdline     string         `json:"cmdline"`
	StartedAt   time.Time      `json:"started_at"`
	Deadline    time.Time      `json:"deadline"`
	SecondsLeft float64        `json:"seconds_left"`
	Rule        string         `json:"rule"`
	Reason      string         `json:"reason"`
	SessionPID  int32          `json:"session_pid,omitempty"`
	Members     int            `json:"members,omitempty"`
	ExitedAt    *time.Time     `json:"exited_at,omitempty"`
	Leftovers   []leftoverView `json:"leftovers,omitempty"`
	State       string         `json:"state,omitempty"`
	Attempt     int            `json:"attempt,omitempty"`
	NextAttempt *time.Time     `json:"next_attempt,omitempty"`
	cgroupinfo.Info
	*SessionFigures
}

type leftoverView struct {
	PID         int32     `json:"pid"`
	Comm        string    `json:"comm"`
	StartedAt   time.Time `json:"started_at"`
	KillAt      time.Time `json:"kill_at"`
	SecondsLeft float64   `json:"seconds_left"`
	cgroupinfo.Info
}

// SessionFigures are a session's resource figures on the /agents entry
// that heads it.
type SessionFigures struct {
	MemoryBytes     int64   `json:"memory_bytes"`
	Procs           int     `json:"procs"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPercent      float64 `json:"cpu_percent"`
	IdleSeconds     float64 `json:"idle_seconds"`
	KeptMemoryBytes int64   `json:"kept_memory_bytes,omitempty"`
	KeptProcs       int     `json:"kept_procs,omitempty"`
	Exempt          bool    `json:"exempt,omitempty"`
}

// healthView is GET /healthz.
type healthView struct {
	Status     string            `json:"status"`
	Source     string            `json:"source"`
	Processes  int               `json:"processes"`
	Agents     int               `json:"agents"`
	Sessions   int               `json:"sessions"`
	Members    int               `json:"session_members"`
	Leftovers  int               `json:"leftovers_pending"`
	Events     uint64            `json:"events"`
	ByType     map[string]uint64 `json:"events_by_type"`
	EventsLost uint64            `json:"events_lost"`
	Overruns   uint64            `json:"overruns"`
	Resyncs    uint64            `json:"resyncs"`
	BadMsgs    uint64            `json:"bad_messages"`
	Forged     uint64            `json:"forged"`
	Rcvbuf     int               `json:"rcvbuf,omitempty"`
	Realtime   bool              `json:"realtime_timer"`
	DryRun     bool              `json:"dry_run"`
	Database   string            `json:"database"`
	SpoolRows  int               `json:"spool_rows"`
	Dropped    uint64            `json:"spool_dropped"`
	SpoolBad   uint64            `json:"spool_bad"`
	InFlight   int64             `json:"kills_in_flight"`
	Retrying   int               `json:"kills_retrying"`
	Host       string            `json:"host"`
	LastSnap   string            `json:"last_snapshot,omitempty"`
	Rate       float64           `json:"events_per_second"`
	MaxAge     string            `json:"max_age"`
}
