package psi

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// Candidate is a session the pressure policy may choose, as last sampled.
type Candidate struct {
	ID          tracker.SessionID
	Comm        string
	Started     int64 // the agent's start, CLOCK_BOOTTIME ns
	MemoryBytes int64 // the session's memory at the last sample
	Procs       int   // its live processes at the last sample
	Exempt      bool  // root-kept (--keep, a control-socket keep; never REAPER_KEEP=1): never killed for resources
}

// Sessions gives the policy the sessions as last sampled.
type Sessions interface {
	Candidates() []Candidate
}

// Killer kills a whole session now for pressure p. An error (the session
// became exempt or ended since the sample) makes the policy try the next.
type Killer interface {
	KillForPressure(c Candidate, p Pressure) error
}

// PolicyConfig configures a Policy.
type PolicyConfig struct {
	MinAge   time.Duration // only sessions at least this old are candidates
	Cooldown time.Duration // after a kill, triggers are counted, not acted on
	Sessions Sessions
	Killer   Killer
	Now      func() int64 // CLOCK_BOOTTIME ns, the clock Started counts on
	Log      *zap.Logger
	DryRun   bool // the Killer only reports: the log says "would kill"
	// Quiet is how often "no candidate" is logged at most (default 1m):
	// under sustained pressure the trigger fires every window.
	Quiet time.Duration
}

// Outcome is what a trigger led to.
type Outcome int

const (
	Killed      Outcome = iota // a session was killed (or, in dry-run, reported)
	Cooling                    // within the cooldown of the last kill: counted only
	NoCandidate                // no session old enough and not exempt
	Failed                     // every candidate's kill failed
)

func (o Outcome) String() string {
	switch o {
	case Killed:
		return "killed"
	case Cooling:
		return "cooling"
	case NoCandidate:
		return "no_candidate"
	}
	return "failed"
}

// Decision is what one trigger did.
type Decision struct {
	Outcome Outcome
	Victim  Candidate     // the session killed (Killed)
	Wait    time.Duration // the cooldown left (Cooling)
	Err     error         // the last kill error (Failed)
}

// Policy decides what a PSI trigger kills: one session, the largest by
// memory among those old enough and not exempt, then nothing until the
// cooldown has passed. A freshly started session is spared by the minimum
// age because its figures are young and it is rarely the cause of pressure
// that built up over minutes; the cooldown gives the kernel time to reclaim
// what the victim held and the averages time to fall before a second
// victim is judged on them.
type Policy struct {
	cfg PolicyConfig

	mu        sync.Mutex
	lastKill  int64 // boottime of the last kill; 0 for none
	cooled    int   // triggers counted during the current cooldown
	victims   map[tracker.SessionID]bool
	lastQuiet int64 // boottime "no candidate" was last logged
	quieted   int   // triggers with no candidate since it was
}

// NewPolicy returns a policy.
func NewPolicy(cfg PolicyConfig) *Policy {
	if cfg.Quiet <= 0 {
		cfg.Quiet = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Policy{cfg: cfg, victims: map[tracker.SessionID]bool{}}
}

// SetLimits changes the minimum age and the cooldown (a reload). A
// cooldown in progress is judged by the new length.
func (p *Policy) SetLimits(minAge, cooldown time.Duration) {
	p.mu.Lock()
	p.cfg.MinAge, p.cfg.Cooldown = minAge, cooldown
	p.mu.Unlock()
}

// Limits returns the minimum age and the cooldown in force.
func (p *Policy) Limits() (minAge, cooldown time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.MinAge, p.cfg.Cooldown
}

// Trigger acts on one firing of the trigger with the figures read then.
func (p *Policy) Trigger(pr Pressure) Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	psiFields := []zap.Field{zap.Float64("some_avg10", pr.Some.Avg10), zap.Float64("full_avg10", pr.Full.Avg10)}
	if p.lastKill != 0 {
		if left := time.Duration(p.lastKill + int64(p.cfg.Cooldown) - now); left > 0 {
			p.cooled++
			p.cfg.Log.Debug("memory pressure during the cooldown: counted, nothing killed",
				append(psiFields, zap.Duration("cooldown_left", left), zap.Int("triggers_in_cooldown", p.cooled))...)
			return Decision{Outcome: Cooling, Wait: left}
		}
	}
	all := p.cfg.Sessions.Candidates()
	cands := Choose(all, now, p.cfg.MinAge, p.victims)
	p.pruneVictims(all)
	if len(cands) == 0 {
		p.quieted++
		if p.lastQuiet == 0 || time.Duration(now-p.lastQuiet) >= p.cfg.Quiet {
			p.cfg.Log.Warn("memory pressure, but no session to kill (none is older than the minimum age and not exempt)",
				append(psiFields, zap.Int("sessions", len(all)), zap.Duration("min_age", p.cfg.MinAge),
					zap.Int("triggers_since_last_logged", p.quieted))...)
			p.lastQuiet, p.quieted = now, 0
		}
		return Decision{Outcome: NoCandidate}
	}
	var err error
	for _, c := range cands {
		if err = p.cfg.Killer.KillForPressure(c, pr); err != nil {
			p.cfg.Log.Info("memory pressure: candidate not killed, trying the next",
				zap.Int32("session_pid", c.ID.PID), zap.String("comm", c.Comm), zap.Error(err))
			continue
		}
		p.lastKill, p.victims[c.ID] = now, true
		msg := "memory pressure: killing the largest session"
		if p.cfg.DryRun {
			msg = "memory pressure: would kill the largest session (dry run)"
		}
		p.cfg.Log.Warn(msg,
			append(psiFields, zap.Int32("session_pid", c.ID.PID), zap.String("comm", c.Comm),
				zap.Int64("memory_bytes", c.MemoryBytes), zap.Int("procs", c.Procs), zap.Duration("age", time.Duration(now-c.Started)),
				zap.Int("candidates", len(cands)), zap.Int("triggers_in_last_cooldown", p.cooled),
				zap.Duration("cooldown", p.cfg.Cooldown))...)
		p.cooled = 0
		return Decision{Outcome: Killed, Victim: c}
	}
	p.cfg.Log.Error("memory pressure: no candidate could be killed", append(psiFields, zap.Error(err))...)
	return Decision{Outcome: Failed, Err: err}
}

// pruneVictims forgets victims that are no longer sampled (gone).
func (p *Policy) pruneVictims(all []Candidate) {
	if len(p.victims) == 0 {
		return
	}
	live := make(map[tracker.SessionID]bool, len(all))
	for _, c := range all {
		live[c.ID] = true
	}
	for id := range p.victims {
		if !live[id] {
			delete(p.victims, id)
		}
	}
}

// Choose orders the candidates a trigger may kill: not exempt, at least
// minAge old at now, not already chosen (a victim still dying, or still
// alive in dry-run, is not chosen twice); largest memory first, then the
// oldest, then the lowest PID, so the choice is deterministic.
func Choose(all []Candidate, now int64, minAge time.Duration, skip map[tracker.SessionID]bool) []Candidate {
	var out []Candidate
	for _, c := range all {
		if c.Exempt || skip[c.ID] || time.Duration(now-c.Started) < minAge {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.MemoryBytes != b.MemoryBytes {
			return a.MemoryBytes > b.MemoryBytes
		}
		if a.Started != b.Started {
			return a.Started < b.Started
		}
		return a.ID.PID < b.ID.PID
	})
	return out
}

// Details are the PSI figures a pressure kill record carries
// (tel.agent_kills.details).
func Details(p Pressure) map[string]float64 {
	return map[string]float64{"psi_some_avg10": p.Some.Avg10, "psi_full_avg10": p.Full.Avg10}
}

// String is a one-line summary for logs and dry-run reports.
func (d Decision) String() string {
	switch d.Outcome {
	case Killed:
		return fmt.Sprintf("killed session %d (%s, %d bytes)", d.Victim.ID.PID, d.Victim.Comm, d.Victim.MemoryBytes)
	case Cooling:
		return fmt.Sprintf("cooling down (%s left)", d.Wait.Round(time.Millisecond))
	case NoCandidate:
		return "no candidate"
	}
	return fmt.Sprintf("failed: %v", d.Err)
}
