package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/statefile"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// The control socket: the only way to change an agent's fate while the
// daemon runs (the HTTP endpoints stay read-only). The daemon side serves
// it; the client side is the commands extend, keep, unkeep, kill and
// reload.

// leasesFile holds the leases and keeps given through the control socket,
// in the state dir, so that they survive a restart.
const leasesFile = "leases.json"

// maxExtend bounds one extend, as --max-age is bounded.
const maxExtend = config.MaxMaxAge

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
		if err != nil {
			return control.Errorf("%v", err)
		}
		msg := fmt.Sprintf("pid %d (%s) kept, with its descendants", res.PID, res.Comm)
		if len(res.Dequeued) > 0 {
			msg += "; kills taken back: " + pidList(res.Dequeued)
		}
		if len(res.Busy) > 0 {
			msg += "; already being killed, too late: " + pidList(res.Busy)
		}
		return c.saved(control.Response{Message: msg, PIDs: res.Dequeued})
	case control.CmdUnkeep:
		res, err := c.table.Unkeep(r.PID, start)
		if err != nil {
			return control.Errorf("%v", err)
		}
		msg := fmt.Sprintf("pid %d (%s) is subject to the policies again", res.PID, res.Comm)
		if len(res.Queued) > 0 {
			msg += "; queued: " + pidList(res.Queued)
		}
		return c.saved(control.Response{Message: msg, PIDs: res.Queued})
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
		if time.Until(t) > maxExtend {
			return control.Errorf("--until %s is more than %s away", r.Until, maxExtend)
		}
		res, err = c.table.ExtendUntil(r.PID, start, c.clock.Now()+int64(time.Until(t)))
	default:
		d, perr := parseExtend(r.Duration)
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
		return control.Errorf("%s, but it could not be saved and a restart would lose it: %v", resp.Message, err)
	}
	return resp
}

func parseExtend(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 30m, 4h)", s)
	}
	if d <= 0 || d > maxExtend {
		return 0, fmt.Errorf("duration %s must be positive and at most %s", d, maxExtend)
	}
	return d, nil
}

func pidList(pids []int32) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

// reloadMu makes a reload by SIGHUP and one by the control socket take
// turns.
var reloadMu sync.Mutex

// reloadNow is what SIGHUP does: read the configuration again and put it
// in force, or keep the old one and say why.
func (d *daemon) reloadNow(reload func() (*config.Config, error)) error {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	n, err := reload()
	if err != nil {
		// config.Parse's errors never hold a password.
		d.log.Error("reload rejected; the old configuration stays in force", zap.String("error", err.Error()))
		return err
	}
	d.applyReload(n)
	d.reloadPressure(n) // pressure.go
	return nil
}

// leaseSaveMu orders the saves, so that an older state never replaces a
// newer one.
var leaseSaveMu sync.Mutex

func (d *daemon) saveLeases() error {
	leaseSaveMu.Lock()
	defer leaseSaveMu.Unlock()
	return statefile.Save(filepath.Join(d.cfg.StateDir, leasesFile), d.table.LeaseState())
}

// loadLeases gives the table the leases and keeps of the previous run.
// Called before the start-up scan is merged; what belongs to processes
// that are gone is pruned after it.
func (d *daemon) loadLeases() {
	path := filepath.Join(d.cfg.StateDir, leasesFile)
	var state []tracker.Lease
	switch err := statefile.Load(path, &state); {
	case errors.Is(err, os.ErrNotExist):
		return
	case errors.Is(err, statefile.ErrOtherBoot):
		d.log.Info("leases are from before the last reboot: ignored", zap.String("file", path))
		return
	case err != nil:
		d.log.Warn("leases unreadable: none restored", zap.Error(err))
		return
	}
	d.table.LoadLeases(state)
}

// serveControl starts the control socket (nil when disabled).
func (d *daemon) serveControl(reload func() (*config.Config, error)) (*control.Server, error) {
	if n := d.table.PruneLeases(); n > 0 {
		d.log.Info("leases restored", zap.Int("processes", n))
	}
	if d.cfg.ControlSocket == "" {
		return nil, nil
	}
	c := &controller{table: d.table, clock: d.clock, allow: d.guard.Allowed, dryRun: d.cfg.DryRun, save: d.saveLeases, stat: d.procs.Stat,
		reload: func() error { return d.reloadNow(reload) }}
	s, err := control.Listen(control.Config{Path: d.cfg.ControlSocket, Group: d.cfg.ControlGID, Handler: c.handle,
		Log: d.log.Named("control")})
	if err != nil {
		return nil, err
	}
	d.log.Info("control socket", zap.String("path", s.Path()), zap.String("group", d.cfg.ControlGroup))
	return s, nil
}

// controlCmd is the client side: extend, keep, unkeep, kill and reload.
func controlCmd(cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := config.NewFlagSet(cmd)
	sock := config.String(fs, "control-socket")
	until := config.String(fs, "until")
	force := config.Bool(fs, "force")
	usage := config.Synopsis(cmd)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "supervisor: %s: %s (usage: supervisor %s)\n", cmd, fmt.Sprintf(format, a...), usage)
		return 2
	}
	// Flags may come before or after the arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				config.PrintHelp(stdout, cmd)
				return 0
			}
			return fail("%s", config.FlagError(err))
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["until"] && cmd != control.CmdExtend {
		return fail("--until is for extend")
	}
	if given["force"] && cmd != control.CmdKill {
		return fail("--force is for kill")
	}
	path := *sock
	if !given["control-socket"] {
		if v := getenv("REAPER_CONTROL_SOCKET"); v != "" {
			path = v
		}
	}
	if path == "" {
		return fail("no control socket (--control-socket is empty)")
	}
	req := control.Request{Cmd: cmd, Force: *force}
	want := 1
	switch {
	case cmd == control.CmdReload:
		want = 0
	case cmd == control.CmdExtend && !given["until"]:
		want = 2
	}
	if len(pos) != want {
		return fail("want %d argument(s), got %d", want, len(pos))
	}
	if want > 0 {
		pid, start, err := parsePIDStart(pos[0])
		if err != nil {
			return fail("%v", err)
		}
		req.PID, req.Start = pid, start
	}
	if cmd == control.CmdExtend {
		if given["until"] {
			t, err := parseUntil(*until, time.Now())
			if err != nil {
				return fail("--until: %v", err)
			}
			req.Until = t.Format(time.RFC3339Nano)
		} else {
			if _, err := parseExtend(pos[1]); err != nil {
				return fail("%v", err)
			}
			req.Duration = pos[1]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, path, req)
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		fmt.Fprintf(stderr, "supervisor: %s: permission denied on %s: the control socket is for root (and members of the daemon's --control-group)\n", cmd, path)
		return 1
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		fmt.Fprintf(stderr, "supervisor: %s: no daemon answers on %s (is it running, with this --control-socket?)\n", cmd, path)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "supervisor: %s: %s: %v\n", cmd, path, err)
		return 1
	case resp.Error != "":
		fmt.Fprintf(stderr, "supervisor: %s: %s\n", cmd, printable(resp.Error))
		return 1
	}
	fmt.Fprintln(stdout, printable(resp.Message))
	return 0
}

// parsePIDStart reads PID or PID@START, START being the process's start
// time as /agents shows it (started_at, RFC 3339): with it the daemon
// refuses the command if PID now belongs to a process that started at
// another time.
func parsePIDStart(s string) (int32, string, error) {
	p, st, withStart := strings.Cut(s, "@")
	pid, err := strconv.ParseInt(p, 10, 32)
	if err != nil || pid <= 0 {
		return 0, "", fmt.Errorf("invalid PID %q (want PID or PID@START)", config.ScrubArg(p))
	}
	if !withStart {
		return int32(pid), "", nil
	}
	t, err := time.Parse(time.RFC3339Nano, st)
	if err != nil {
		return 0, "", fmt.Errorf("invalid START %q: want the process's started_at as /agents shows it (RFC 3339, e.g. 2026-11-27T16:23:24.51621768Z)", config.ScrubArg(st))
	}
	return int32(pid), t.Format(time.RFC3339Nano), nil
}

// parseUntil reads a deadline: RFC 3339, or local "YYYY-MM-DD HH:MM[:SS]",
// or local "HH:MM[:SS]" today.
func parseUntil(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			y, m, d := now.Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, now.Location()), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q (want RFC 3339, YYYY-MM-DD HH:MM[:SS] or HH:MM[:SS])", s)
}
