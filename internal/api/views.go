package api

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// SessionFigures are a session's figures in /agents. MemoryBytes and
// Procs leave out root-kept members (a --keep rule, a control-socket keep:
// what the limits and the pressure policy judge; REAPER_KEEP=1 members
// are counted in them like any other); KeptMemoryBytes and KeptProcs are
// the root-kept members'.
type SessionFigures struct {
	MemoryBytes     int64   `json:"memory_bytes"`
	Procs           int     `json:"procs"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPercent      float64 `json:"cpu_percent"`
	IdleSeconds     float64 `json:"idle_seconds"`
	KeptMemoryBytes int64   `json:"kept_memory_bytes,omitempty"`
	KeptProcs       int     `json:"kept_procs,omitempty"`
	// Exempt: no limit or pressure kill touches the session (its agent is
	// root-kept, or every member left is).
	Exempt bool `json:"exempt,omitempty"`
	// Killing: the session is queued to be killed now or being reaped (a
	// resource, pressure or manual kill, or its agent's tree at max age),
	// as of the latest sample.
	Killing bool `json:"killing,omitempty"`
}

func figuresOf(s *resource.Session) *SessionFigures {
	return &SessionFigures{MemoryBytes: s.MemoryBytes, Procs: s.Procs, CPUSeconds: round3(s.CPUSeconds),
		CPUPercent: round3(s.CPUPercent), IdleSeconds: round3(s.IdleSeconds), KeptMemoryBytes: s.KeptMemoryBytes,
		KeptProcs: s.KeptProcs, Exempt: s.Exempt, Killing: s.Killing}
}

// addFigures gives each /agents entry that heads a session its figures
// from the latest sample, matched by session ID (PID and start: a PID
// reused by a newer agent never shows an older session's figures). A
// sampled session with no entry — an exempt one (no deadline: often the
// largest), one being killed, leftovers under --leftovers keep — gets an
// entry of its own with its figures, no deadline and no reason.
func addFigures(src AgentSource, views []AgentView, sessions []tracker.SessionView, w tracker.Wall) []AgentView {
	latest := src.Latest()
	if len(latest) == 0 {
		return views
	}
	by := make(map[tracker.SessionID]*resource.Session, len(latest))
	for i := range latest {
		by[latest[i].ID] = &latest[i]
	}
	shown := make(map[tracker.SessionID]bool, len(views))
	for i := range views {
		v := &views[i]
		if s := by[v.session]; s != nil && v.SessionPID == v.PID && v.session.PID == v.PID {
			v.SessionFigures = figuresOf(s)
			shown[s.ID] = true
		}
	}
	info := make(map[tracker.SessionID]*tracker.SessionView, len(sessions))
	for i := range sessions {
		info[sessions[i].ID] = &sessions[i]
	}
	for i := range latest {
		s := &latest[i]
		tv := info[s.ID]
		if shown[s.ID] || tv == nil {
			continue
		}
		v := AgentView{PID: s.ID.PID, Comm: s.Comm, Rule: tv.Rule, SessionPID: s.ID.PID, Members: tv.Members,
			StartedAt: w.Time(s.ID.Start.NS), Info: tv.Cgroup, SessionFigures: figuresOf(s), session: s.ID}
		if p, ok := src.Lookup(s.ID.PID); ok && tv.AgentAlive && p.Start.Same(s.ID.Start) {
			v.Cmdline = p.Cmdline
		}
		if !tv.AgentAlive {
			exited := w.Time(tv.ExitedAt)
			v.ExitedAt = &exited
		}
		views = append(views, v)
	}
	return views
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// EventTypes name tracker.Counters.Events, in order.
var EventTypes = []string{"fork", "exec", "comm", "exit", "other"}

// HealthView is GET /healthz: the daemon's state in counts, no process
// names (the TCP listeners serve it too).
type HealthView struct {
	Status string `json:"status"` // "ok", "degraded" (Degraded says why) or "starting"
	// Degraded names each cause that makes the daemon degraded: reaping
	// goes on, but rows or state cannot go where they belong (the spool's
	// disk, a state file, the database), each with its cause.
	Degraded   []string          `json:"degraded,omitempty"`
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
	Database   string            `json:"database"` // "none", "up" or "down"
	SpoolRows  int               `json:"spool_rows"`
	Dropped    uint64            `json:"spool_dropped"`
	SpoolBad   uint64            `json:"spool_bad"`
	SpoolHeld  int               `json:"spool_held"` // rows held in memory only: the disk refused them
	InFlight   int64             `json:"kills_in_flight"`
	Retrying   int               `json:"kills_retrying"`
	Host       string            `json:"host"`
	LastSnap   string            `json:"last_snapshot,omitempty"`
	Rate       float64           `json:"events_per_second"`
	MaxAge     string            `json:"max_age"`
	// PressureSomeAvg10 is the memory pressure (PSI "some avg10", percent)
	// of the file the pressure policy watches (--pressure-file, else
	// /proc/pressure/memory); absent where the kernel has no PSI.
	PressureSomeAvg10 *float64 `json:"pressure_some_avg10,omitempty"`
}

// AgentView is one entry of /agents: an agent waiting for its max age (with
// its session's member count), or a session whose agent has exited, with
// its leftovers and when each will be killed (Deadline is the first), or a
// process whose kill failed and is tried again ("state": "retrying", for
// any reason: Deadline is when it was first due, NextAttempt when it is
// tried again).
type AgentView struct {
	PID         int32          `json:"pid"`
	Comm        string         `json:"comm"`
	Cmdline     string         `json:"cmdline"`
	StartedAt   time.Time      `json:"started_at"`
	Deadline    time.Time      `json:"deadline"`
	SecondsLeft float64        `json:"seconds_left"`
	Rule        string         `json:"rule"`
	Reason      string         `json:"reason"`
	SessionPID  int32          `json:"session_pid,omitempty"`
	Members     int            `json:"members,omitempty"` // the session's live members, when this agent heads one
	ExitedAt    *time.Time     `json:"exited_at,omitempty"`
	Leftovers   []LeftoverView `json:"leftovers,omitempty"`
	// State is "retrying" for a process whose kill failed (retry.go in
	// the tracker); Attempt is the retry's number (1 for the first),
	// NextAttempt when it comes.
	State       string     `json:"state,omitempty"`
	Attempt     int        `json:"attempt,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	// cgroup, container_id, pod_uid: where it runs, where known.
	cgroupinfo.Info
	// The session's resource figures at the latest sample, on the entry
	// that heads a session (internal/policy/limits); absent before the first sample.
	*SessionFigures
	// MemberList is the session's live members, on request (members.go).
	MemberList []MemberView `json:"member_list,omitempty"`

	session tracker.SessionID // the session this entry heads or belongs to (not served)
}

// LeftoverView is one leftover of an /agents entry whose agent exited.
type LeftoverView struct {
	PID         int32     `json:"pid"`
	Comm        string    `json:"comm"`
	StartedAt   time.Time `json:"started_at"` // for PID@START (control.go)
	KillAt      time.Time `json:"kill_at"`
	SecondsLeft float64   `json:"seconds_left"`
	cgroupinfo.Info
}

// StateRetrying is the /agents state of a process whose kill failed and
// is tried again.
const StateRetrying = "retrying"

// Agents is GET /agents: the max-age queue's agents, the sessions whose
// agent exited with their leftovers, the kills being retried, and every
// sampled session's figures, soonest deadline first.
func Agents(src AgentSource, q MemberQuery) []AgentView {
	w := tracker.ReadWall(src.Now)
	now := w.Now()
	queue := src.Queue()
	retrying := map[int32]bool{}
	for _, a := range queue {
		if a.Attempt > 0 {
			retrying[a.PID] = true
		}
	}
	sessions := src.Sessions()
	heads := make(map[tracker.SessionID]int, len(sessions))
	out := make([]AgentView, 0, len(sessions))
	for _, s := range sessions {
		heads[s.ID] = s.Members
		// A leftover whose kill failed has an entry of its own.
		s.Leftovers = slices.DeleteFunc(s.Leftovers, func(l tracker.LeftoverView) bool { return retrying[l.PID] })
		if s.AgentAlive || len(s.Leftovers) == 0 {
			continue
		}
		sort.Slice(s.Leftovers, func(i, j int) bool { return s.Leftovers[i].KillAt < s.Leftovers[j].KillAt })
		exited := w.Time(s.ExitedAt)
		v := AgentView{PID: s.ID.PID, Comm: s.Comm, Rule: s.Rule, Reason: string(tracker.ReasonLeftover),
			SessionPID: s.ID.PID, Members: s.Members, StartedAt: w.Time(s.ID.Start.NS), ExitedAt: &exited,
			Deadline: w.Time(s.Leftovers[0].KillAt), SecondsLeft: float64(s.Leftovers[0].KillAt-now) / 1e9,
			Info: s.Cgroup, session: s.ID}
		for _, l := range s.Leftovers {
			v.Leftovers = append(v.Leftovers, LeftoverView{PID: l.PID, Comm: l.Comm, StartedAt: w.Time(l.Start.NS),
				KillAt: w.Time(l.KillAt), SecondsLeft: float64(l.KillAt-now) / 1e9, Info: l.Cgroup})
		}
		out = append(out, v)
	}
	for _, a := range queue {
		if a.Reason != tracker.ReasonMaxAge && a.Attempt == 0 {
			continue
		}
		v := AgentView{
			PID: a.PID, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule, Reason: string(a.Reason),
			SessionPID:  a.Session.PID,
			StartedAt:   w.Time(a.Start.NS),
			Deadline:    w.Time(a.Deadline),
			SecondsLeft: float64(a.Deadline-now) / 1e9,
			Info:        a.Cgroup,
			session:     a.Session,
		}
		if a.Session.PID == a.PID {
			v.Members = heads[a.Session]
		}
		if a.Attempt > 0 {
			next := v.Deadline
			v.State, v.Attempt, v.NextAttempt = StateRetrying, a.Attempt, &next
			v.Deadline = w.Time(a.FirstDeadline)
			v.SecondsLeft = float64(a.FirstDeadline-now) / 1e9
		}
		out = append(out, v)
	}
	out = addFigures(src, out, sessions, w)
	sort.SliceStable(out, func(i, j int) bool { // entries with no deadline (exempt...) last
		a, b := out[i].Deadline, out[j].Deadline
		if a.IsZero() || b.IsZero() {
			return !a.IsZero() && b.IsZero()
		}
		return a.Before(b)
	})
	addMembers(src, out, q, w)
	return out
}

// AgentSource is what /agents is built from: the tracker's deadline queue
// and sessions, and the resource sampler's latest figures.
type AgentSource interface {
	Now() int64                      // boot-time nanoseconds
	Queue() []tracker.Agent          // the deadline queue's agents
	Sessions() []tracker.SessionView // every session
	Lookup(pid int32) (tracker.Proc, bool)
	Latest() []resource.Session // the latest sample; nil before the first
}
