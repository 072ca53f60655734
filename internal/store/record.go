package store

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
)

// Kinds of record.
const (
	KindSnapshot = "snapshot"
	KindKill     = "kill"
)

// Record is one row on its way to PostgreSQL, as the spool stores it.
type Record struct {
	Seq      uint64       `json:"seq"`
	Kind     string       `json:"kind"`
	ID       string       `json:"id"` // UUID, chosen by the daemon
	Host     string       `json:"host"`
	Created  time.Time    `json:"created_at"`
	Snapshot *SnapshotRow `json:"snapshot,omitempty"`
	Kill     *KillRow     `json:"kill,omitempty"`
}

// SnapshotRow is a tel.system_health row.
type SnapshotRow struct {
	CheckType   string          `json:"check_type"`
	Status      string          `json:"status"`
	Details     json.RawMessage `json:"details"`
	ActionTaken *string         `json:"action_taken"`
}

// KillRow is a tel.agent_kills row.
type KillRow struct {
	PID         int32      `json:"pid"`
	Comm        string     `json:"comm"`
	Cmdline     string     `json:"cmdline"`
	Rule        string     `json:"rule"`
	StartedAt   time.Time  `json:"started_at"`
	Deadline    time.Time  `json:"deadline"`
	SignalledAt time.Time  `json:"signalled_at"`
	ExitedAt    *time.Time `json:"exited_at"`
	LatenessMS  float64    `json:"lateness_ms"`
	FinalSignal string     `json:"final_signal"` // "TERM", "KILL" or "" (dry run, refused)
	Outcome     string     `json:"outcome"`
	Descendants []int32    `json:"descendants"`
	DryRun      bool       `json:"dry_run"`
	// Reason is why the process was killed: a tracker.Reason ("max_age",
	// "leftover", ...). Empty (a spool line written before reasons
	// existed) is DefaultReason.
	Reason string `json:"reason"`
	// SessionPID and SessionStartedAt name the session's agent; nil when
	// the process belonged to no session.
	SessionPID       *int32     `json:"session_pid,omitempty"`
	SessionStartedAt *time.Time `json:"session_started_at,omitempty"`
	// RequestedBy names who asked for a manual kill ("uid 0 pid 1234");
	// empty (NULL) for every other reason.
	RequestedBy string `json:"requested_by,omitempty"`
	// MemoryBytes and Procs are the session's figures when a resource
	// policy decided to kill it, Details the policy's own ("limit", ...);
	// nil (NULL) when unknown: every other reason.
	MemoryBytes *int64             `json:"memory_bytes,omitempty"`
	Procs       *int32             `json:"procs,omitempty"`
	Details     map[string]float64 `json:"details,omitempty"`
}

// DefaultReason is the reason of a kill row that has none: before reasons
// existed (migration 002) every kill was an agent at its max age
// (tracker.ReasonMaxAge).
const DefaultReason = "max_age"

// CheckType is the seed's check_type for health rows.
const CheckType = "process_reaper"

// NewID returns a random (version 4) UUID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
