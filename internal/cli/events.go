package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Events follows the daemon's /events (on its API socket) in a
// terminal: one line per event, or the raw JSON lines with --json, until
// interrupted or the stream ends.
func Events(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	af := newAPIFlags("events")
	asJSON := config.Bool(af.fs, "json")
	typeList := config.String(af.fs, "types")
	path, code, done := af.parse(args, getenv, stdout, stderr)
	if done {
		return code
	}
	types, err := events.ParseTypes(*typeList)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: events: --types: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	u := apiURL("/events")
	if types != events.All {
		u += "?types=" + url.QueryEscape(types.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: events: %v\n", err)
		return 2
	}
	// No overall timeout: the stream lasts. Connecting and the first
	// answer are bounded.
	resp, err := apiHTTP(path, 0).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintln(stderr, apiError("events", path, err))
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "supervisor: events: %s answered %v\n", path, statusError(resp))
		return 1
	}
	out := bufio.NewWriter(stdout)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // a kill record lists every descendant
	for sc.Scan() {
		if *asJSON {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
		} else {
			out.WriteString(formatEvent(sc.Bytes()))
			out.WriteByte('\n')
		}
		if err := out.Flush(); err != nil {
			return 1 // stdout closed (a pipe to head): nothing to say it on
		}
	}
	if ctx.Err() != nil {
		return 0
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "supervisor: events: reading the stream from %s: %v\n", path, err)
		return 1
	}
	fmt.Fprintf(stderr, "supervisor: events: the daemon at %s ended the stream (it is stopping, or this client fell too far behind and was dropped)\n", path)
	return 1
}

// formatEvent is one readable line for an event: its local time, its type
// and its key fields. A line it cannot read is shown as it came.
func formatEvent(line []byte) string {
	var h events.Header
	if err := json.Unmarshal(line, &h); err != nil || h.Type == "" {
		return printable(string(line))
	}
	// Each type is read into the events package's own struct: the wire
	// shapes are declared once, where they are written.
	ev := events.New(h.Type)
	if ev == nil {
		return printable(string(line))
	}
	if err := json.Unmarshal(line, ev); err != nil {
		return printable(string(line))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-8s", h.Time.Local().Format("15:04:05.000"), h.Type)
	kv := func(k string, v any) { fmt.Fprintf(&b, " %s=%v", k, v) }
	session := func(pid, session int32) {
		if session != 0 && session != pid {
			kv("session", session)
		}
	}
	at := func(t time.Time) string {
		d := time.Until(t).Round(time.Second)
		if d >= 0 {
			return t.Local().Format("15:04:05") + " (in " + d.String() + ")"
		}
		return t.Local().Format("15:04:05") + " (" + (-d).String() + " ago)"
	}
	switch e := ev.(type) {
	case *events.Agent:
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("rule", e.Rule)
		kv("deadline", at(e.Deadline))
		session(e.PID, e.SessionPID)
	case *events.Deadline:
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("deadline", at(e.Deadline))
		kv("was", e.Previous.Local().Format("15:04:05"))
		kv("by", e.Cause)
		if e.Reason != string(tracker.ReasonMaxAge) {
			kv("reason", e.Reason)
		}
	case *events.Leftover:
		kv("pid", e.PID)
		kv("comm", e.Comm)
		session(e.PID, e.SessionPID)
		kv("kill_at", at(e.KillAt))
	case *events.Kill:
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("reason", e.Reason)
		kv("outcome", e.Outcome)
		if e.FinalSignal != "" {
			kv("signal", e.FinalSignal)
		}
		kv("late", fmt.Sprintf("%.1fms", e.LatenessMS))
		kv("descendants", len(e.Descendants))
		if e.SessionPID != nil {
			session(e.PID, *e.SessionPID)
		}
		if e.DryRun {
			b.WriteString(" dry-run")
		}
	case *events.Snapshot:
		kv("status", e.Status)
		if e.ActionTaken != nil {
			kv("action", fmt.Sprintf("%q", *e.ActionTaken))
		}
	case *events.Resync:
		kv("took", fmt.Sprintf("%.1fms", e.TookMS))
		kv("processes", e.Processes)
		kv("lost_total", e.EventsLost)
	case *events.Lost:
		kv("events", e.Events)
		kv("total", e.Total)
	case *events.Pressure:
		kv("resource", e.Resource)
		kv("some_avg10", e.SomeAvg10)
		kv("full_avg10", e.FullAvg10)
		session(0, e.SessionPID)
	default:
		return printable(string(line))
	}
	return printable(b.String())
}
