package daemon

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// The control socket: the only way to change an agent's fate while the
// daemon runs (the HTTP endpoints stay read-only). The daemon side serves
// it; the client side is the commands extend, keep, unkeep, kill and
// reload.

// controlTable is what the commands need of the process table.
type controlTable interface {
	Extend(pid int32, start tracker.Start, d time.Duration) (tracker.LeaseResult, error)
	ExtendUntil(pid int32, start tracker.Start, until int64) (tracker.LeaseResult, error)
	Keep(pid int32, start tracker.Start) (tracker.LeaseResult, error)
	Unkeep(pid int32, start tracker.Start) (tracker.LeaseResult, error)
	KillNow(pid int32, start tracker.Start, force bool, by string, allow func(pid int32, kthread bool) bool) (tracker.LeaseResult, error)
}

var _ controlTable = (*tracker.Table)(nil)

// controller carries out the control socket's commands.
type controller struct {
	table  controlTable
	clock  tracker.Clock
	allow  func(pid int32, kthread bool) bool // reap.Guard's rule
	reload func() error
	save   func() error // persists the leases
	dryRun bool
	// stat reads a live process's start time (/proc), for PID@START.
	stat func(pid int32) (tracker.ProcInfo, error)
}

// startTolerance is how far a PID@START's time may be from the live
// process's start and still name it. The time is what /agents showed:
// the start converted to the wall clock at that moment; here it is
// converted back at another, so the two differ by the drift between the
// wall clock and CLOCK_BOOTTIME in between (NTP slews at most 0.5 ms a
// second), plus /proc's tick (the live start is read there) and the fork
// event's lag behind it (tracker's forkSlack, 50 ms). A PID can only be
// held by another process after its holder exited and the PID allocator
// went all the way round, so a start this close to the live one's is that
// process. A clock step in between makes the command refuse (the safe
// failure): read /agents again.
const startTolerance = 250 * time.Millisecond

// identity is the start to hold a command's process to: the zero Start
// (whichever process holds the PID) without a START, else the live
// process's start as /proc has it, after checking it against START. The
// table then checks its own entry against that (tracker.Start.Same), so a
// command never acts on a process that started at another time.
func (c *controller) identity(r control.Request) (tracker.Start, error) {
	if r.Start == "" {
		return tracker.Start{}, nil
	}
	want, err := time.Parse(time.RFC3339Nano, r.Start)
	if err != nil {
		return tracker.Start{}, fmt.Errorf("start %q: want an RFC 3339 time, as started_at in /agents", r.Start)
	}
	info, err := c.stat(r.PID)
	switch {
	case errors.Is(err, tracker.ErrGone):
		return tracker.Start{}, fmt.Errorf("pid %d: no such process (the one that started at %s has exited)", r.PID, r.Start)
	case err != nil:
		return tracker.Start{}, fmt.Errorf("pid %d: cannot read its start time: %v", r.PID, err)
	}
	// /proc gives the tick the process started in: [live, live + Tick).
	live := tracker.Time(info.Start.NS, c.clock.Now())
	if d := want.Sub(live); d < -startTolerance || d > time.Duration(tracker.Tick)+startTolerance {
		return tracker.Start{}, fmt.Errorf("pid %d is now a process that started at %s, not at %s: refused (another process holds the PID, or the clock was set since)",
			r.PID, live.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano))
	}
	return info.Start, nil
}

func (c *controller) handle(p control.Peer, r control.Request) control.Response {
	switch r.Cmd {
	case control.CmdReload:
		if err := c.reload(); err != nil {
			return control.Errorf("reload rejected; the old configuration stays in force: %v", err)
		}
		return control.Response{Message: "ok"}
	case control.CmdKeep, control.CmdUnkeep, control.CmdKill:
		if !c.allow(r.PID, false) {
			// Keeping PID 1 or an ancestor of ours would exempt every
			// process on the host: the same never-touch rule as kills.
			return control.Errorf("pid %d is protected: never PID 1, the daemon, its ancestors or a kernel thread", r.PID)
		}
		if r.Force && p.UID != 0 {
			return control.Errorf("--force is for root only: a --control-group member may kill agents and their sessions, not any process")
		}
	}
	start, err := c.identity(r)
	if err != nil {
		return control.Errorf("%v", err)
	}
	switch r.Cmd {
	case control.CmdExtend:
		return c.extend(r, start)
	case control.CmdKeep:
		res, err := c.table.Keep(r.PID, start)
		return c.leaseAnswer(err, fmt.Sprintf("pid %d (%s) kept, with its descendants", res.PID, res.Comm), res.Dequeued,
			pidNote{"; kills taken back: ", res.Dequeued}, pidNote{"; already being killed, too late: ", res.Busy})
	case control.CmdUnkeep:
		res, err := c.table.Unkeep(r.PID, start)
		return c.leaseAnswer(err, fmt.Sprintf("pid %d (%s) is subject to the policies again", res.PID, res.Comm), res.Queued,
			pidNote{"; queued: ", res.Queued})
	case control.CmdKill:
		res, err := c.table.KillNow(r.PID, start, r.Force, p.String(), c.allow)
		if err != nil {
			return control.Errorf("%v", err)
		}
		what := fmt.Sprintf("pid %d (%s)", res.PID, res.Comm)
		switch {
		case res.Session.PID == res.PID:
			what = fmt.Sprintf("the session of agent %d (%s)", res.PID, res.Comm)
		case !res.Session.IsZero():
			what = fmt.Sprintf("the session of agent %d (of %s)", res.Session.PID, what)
		}
		msg := what + " is being killed now (reason manual): " + pidList(res.Queued)
		if len(res.Busy) > 0 {
			msg += "; already being killed: " + pidList(res.Busy)
		}
		if c.dryRun {
			msg += " (dry run: nothing is signalled)"
		}
		return control.Response{Message: msg, PIDs: append(res.Queued, res.Busy...)}
	}
	return control.Errorf("unknown command %q", r.Cmd)
}

func (c *controller) extend(r control.Request, start tracker.Start) control.Response {
	var res tracker.LeaseResult
	var err error
	switch {
	case r.Duration != "" && r.Until != "":
		return control.Errorf("give a duration or --until, not both")
	case r.Until != "":
		t, perr := time.Parse(time.RFC3339Nano, r.Until)
		if perr != nil {
			return control.Errorf("--until %q: want an RFC 3339 time", r.Until)
		}
		if time.Until(t) > control.MaxExtend {
			return control.Errorf("--until %s is more than %s away", r.Until, control.MaxExtend)
		}
		res, err = c.table.ExtendUntil(r.PID, start, c.clock.Now()+int64(time.Until(t)))
	default:
		d, perr := control.ParseExtend(r.Duration)
		if perr != nil {
			return control.Errorf("%v", perr)
		}
		res, err = c.table.Extend(r.PID, start, d)
	}
	if err != nil {
		return control.Errorf("%v", err)
	}
	now := c.clock.Now()
	at := tracker.Time(res.Deadline, now)
	msg := fmt.Sprintf("pid %d (%s): deadline %s (in %s)", res.PID, res.Comm, at.Format(time.RFC3339),
		time.Duration(res.Deadline-now).Round(time.Second))
	if r.Until == "" && res.Extra > 0 {
		msg += fmt.Sprintf(", extended by %s in all", res.Extra)
	}
	return c.saved(control.Response{Message: msg, Deadline: &at, PIDs: []int32{res.PID}})
}

// saved persists the leases after a change, and says so if it could not:
// the change is in force, but a restart would lose it.
func (c *controller) saved(resp control.Response) control.Response {
	if err := c.save(); err != nil {
		return control.Errorf("%s, but it could not be saved (%v): it is kept in memory and saved when the state dir takes it; a restart before then would lose it", resp.Message, err)
	}
	return resp
}

// pidNote is a list of pids an answer names after its label, if any.
type pidNote struct {
	label string
	pids  []int32
}

// leaseAnswer is the answer to keep and unkeep, saved: err, else msg and
// each note that has pids, with pids as the answer's list.
func (c *controller) leaseAnswer(err error, msg string, pids []int32, notes ...pidNote) control.Response {
	if err != nil {
		return control.Errorf("%v", err)
	}
	for _, n := range notes {
		if len(n.pids) > 0 {
			msg += n.label + pidList(n.pids)
		}
	}
	return c.saved(control.Response{Message: msg, PIDs: pids})
}

func pidList(pids []int32) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}
