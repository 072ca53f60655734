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
	fs := config.NewFlagSet("events")
	af := addAPIFlags(fs)
	asJSON := config.Bool(fs, "json")
	typeList := config.String(fs, "types")
	path, code, done := af.parse(fs, "events", args, getenv, stdout, stderr)
	if done {
		return code
	}
	if fs.NArg() > 0 || path == "" {
		fmt.Fprintf(stderr, "supervisor: events: want %s and no arguments\n", apiUsage)
		return 2
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

// wireEvent is any event as it arrives, for formatEvent: the union of the
// types' fields.
type wireEvent struct {
	Type        string     `json:"type"`
	Time        time.Time  `json:"time"`
	PID         int32      `json:"pid"`
	Comm        string     `json:"comm"`
	Rule        string     `json:"rule"`
	Reason      string     `json:"reason"`
	Cause       string     `json:"cause"`
	Deadline    time.Time  `json:"deadline"`
	Previous    time.Time  `json:"previous"`
	KillAt      time.Time  `json:"kill_at"`
	SessionPID  *int32     `json:"session_pid"`
	LatenessMS  float64    `json:"lateness_ms"`
	FinalSignal string     `json:"final_signal"`
	Outcome     string     `json:"outcome"`
	Descendants []int32    `json:"descendants"`
	DryRun      bool       `json:"dry_run"`
	ExitedAt    *time.Time `json:"exited_at"`
	Status      string     `json:"status"`
	ActionTaken *string    `json:"action_taken"`
	TookMS      float64    `json:"took_ms"`
	Processes   int        `json:"processes"`
	LostTotal   uint64     `json:"events_lost_total"`
	Events      uint64     `json:"events"`
	Total       uint64     `json:"total"`
	Resource    string     `json:"resource"`
	SomeAvg10   float64    `json:"some_avg10"`
	FullAvg10   float64    `json:"full_avg10"`
}

// formatEvent is one readable line for an event: its local time, its type
// and its key fields. A line it cannot read is shown as it came.
func formatEvent(line []byte) string {
	var e wireEvent
	if err := json.Unmarshal(line, &e); err != nil || e.Type == "" {
		return printable(string(line))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-8s", e.Time.Local().Format("15:04:05.000"), e.Type)
	kv := func(k string, v any) { fmt.Fprintf(&b, " %s=%v", k, v) }
	session := func() {
		if e.SessionPID != nil && *e.SessionPID != 0 && *e.SessionPID != e.PID {
			kv("session", *e.SessionPID)
		}
	}
	at := func(t time.Time) string {
		d := time.Until(t).Round(time.Second)
		if d >= 0 {
			return t.Local().Format("15:04:05") + " (in " + d.String() + ")"
		}
		return t.Local().Format("15:04:05") + " (" + (-d).String() + " ago)"
	}
	switch e.Type {
	case "agent":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("rule", e.Rule)
		kv("deadline", at(e.Deadline))
		session()
	case "deadline":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("deadline", at(e.Deadline))
		kv("was", e.Previous.Local().Format("15:04:05"))
		kv("by", e.Cause)
		if e.Reason != string(tracker.ReasonMaxAge) {
			kv("reason", e.Reason)
		}
	case "leftover":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		session()
		kv("kill_at", at(e.KillAt))
	case "kill":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("reason", e.Reason)
		kv("outcome", e.Outcome)
		if e.FinalSignal != "" {
			kv("signal", e.FinalSignal)
		}
		kv("late", fmt.Sprintf("%.1fms", e.LatenessMS))
		kv("descendants", len(e.Descendants))
		session()
		if e.DryRun {
			b.WriteString(" dry-run")
		}
	case "snapshot":
		kv("status", e.Status)
		if e.ActionTaken != nil {
			kv("action", fmt.Sprintf("%q", *e.ActionTaken))
		}
	case "resync":
		kv("took", fmt.Sprintf("%.1fms", e.TookMS))
		kv("processes", e.Processes)
		kv("lost_total", e.LostTotal)
	case "lost":
		kv("events", e.Events)
		kv("total", e.Total)
	case "pressure":
		kv("resource", e.Resource)
		kv("some_avg10", e.SomeAvg10)
		kv("full_avg10", e.FullAvg10)
		session()
	default:
		return printable(string(line))
	}
	return printable(b.String())
}
