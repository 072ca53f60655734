package limits

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// DryRunKill is what a limit would have killed in a dry run, for its
// dry-run kill row.
type DryRunKill struct {
	Session             tracker.SessionID
	Comm, Cmdline, Rule string
	Reason              tracker.Reason
	At                  int64 // boot-time ns: deadline and signal time of the row
	Figures             tracker.Figures
}

// WouldKill reports, once per session and reason, what a limit would kill
// in a dry run: a log line and a dry-run kill row, as a dry run at max age
// gives. The pressure policy reports through it too, so that a session is
// reported once per reason whichever policy saw it.
func (g *Guard) WouldKill(s *resource.Session, c resource.Crossing) {
	k := dryKey{s.ID, c.Reason}
	g.mu.Lock()
	done := g.reported[k]
	g.reported[k] = true
	g.mu.Unlock()
	if done {
		return
	}
	now := g.cfg.Now()
	r := DryRunKill{Session: s.ID, Comm: s.Comm, Reason: c.Reason, At: now, Figures: c.Figures}
	if p, ok := g.cfg.Table.Lookup(s.ID.PID); ok && p.Start.Same(s.ID.Start) {
		r.Cmdline = p.Cmdline
	}
	for _, v := range g.cfg.Table.Sessions() {
		if v.ID == s.ID {
			r.Rule = v.Rule
		}
	}
	g.cfg.OnDryRun(r)
	g.log.Info("would kill session", zap.Int32("session_pid", s.ID.PID), zap.String("comm", s.Comm),
		zap.String("reason", string(c.Reason)), zap.Int64("memory_bytes", s.MemoryBytes), zap.Int("procs", s.Procs),
		zap.Float64("idle_seconds", s.IdleSeconds), zap.Float64("limit", c.Figures.Details["limit"]), zap.Bool("dry_run", true))
}

// warnNothing reports whether "nothing to kill" for session id is due at
// Warn: once a minute per session (the members that are left may all have
// been pinned in vain, at every sample).
func (g *Guard) warnNothing(id tracker.SessionID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := g.nothing[id]; ok && time.Since(last) < time.Minute {
		return false
	}
	g.nothing[id] = time.Now()
	return true
}

// forget drops the dry-run reports and warnings of sessions that ended.
func (g *Guard) forget(out []resource.Session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.reported) == 0 && len(g.nothing) == 0 {
		return
	}
	live := make(map[tracker.SessionID]bool, len(out))
	for i := range out {
		live[out[i].ID] = true
	}
	for k := range g.reported {
		if !live[k.id] {
			delete(g.reported, k)
		}
	}
	for id := range g.nothing {
		if !live[id] {
			delete(g.nothing, id)
		}
	}
}
