package pressure

import (
	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Table is what a pressure kill needs of the tracker; *tracker.Table is
// one.
type Table interface {
	KillSession(id tracker.SessionID, why tracker.Reason, fig tracker.Figures) (tracker.LeaseResult, error)
}

// Samples is the last resource sample, whose sessions are the candidates;
// *limits.Guard is one.
type Samples interface {
	Latest() []resource.Session
}

// Reporter reports what a kill would do in a dry run, once per session
// and reason; *limits.Guard is one (the limits report through it too).
type Reporter interface {
	WouldKill(s *resource.Session, c resource.Crossing)
}

// The tracker's table is what a pressure kill asks for.
var _ Table = (*tracker.Table)(nil)

// candidates gives the policy the last resource sample. A session's
// memory there leaves out only its root-kept members (--keep, a
// control-socket keep), which the kill would spare: a REAPER_KEEP=1
// member's memory counts, and dies with the session, so a session cannot
// hide what it holds behind the marker and have a well-behaved one killed
// in its place.
type candidates struct{ samples Samples }

func (s candidates) Candidates() []psi.Candidate {
	latest := s.samples.Latest()
	out := make([]psi.Candidate, 0, len(latest))
	for _, r := range latest {
		if r.Killing {
			continue // already on its way out
		}
		out = append(out, psi.Candidate{ID: r.ID, Comm: r.Comm, Started: r.Started, MemoryBytes: r.MemoryBytes,
			Procs: r.Procs, Exempt: r.Exempt})
	}
	return out
}

// killer kills a session for pressure, with the PSI figures and the
// session's memory on the record.
type killer struct {
	table  Table
	report Reporter
	dryRun bool
}

func (k killer) KillForPressure(c psi.Candidate, p psi.Pressure) error {
	fig := tracker.Figures{MemoryBytes: c.MemoryBytes, Procs: c.Procs, Details: psi.Details(p)}
	if k.dryRun {
		// As the limits do in a dry run: a "would kill session" line and
		// a dry-run kill row, once per session, nothing queued.
		k.report.WouldKill(&resource.Session{ID: c.ID, Comm: c.Comm, Started: c.Started,
			MemoryBytes: c.MemoryBytes, Procs: c.Procs}, resource.Crossing{Reason: tracker.ReasonPressure, Figures: fig})
		return nil
	}
	_, err := k.table.KillSession(c.ID, tracker.ReasonPressure, fig)
	return err
}
