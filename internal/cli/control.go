package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/control"
)

// Control is the client side: extend, keep, unkeep, kill and reload.
func Control(cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
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
			if _, err := control.ParseExtend(pos[1]); err != nil {
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
