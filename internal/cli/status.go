package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/termtext"
)

// Status asks the running daemon for /healthz and /agents on its API
// socket and prints them for a person: one header, then one line per agent
// with a bar of how much of its max age is used. It fits 80 columns.
func Status(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	af := newAPIFlags("status")
	path, code, done := af.parse(args, getenv, stdout, stderr)
	if done {
		return code
	}
	c := apiHTTP(path, 5*time.Second)
	var h api.HealthView
	var agents []api.AgentView
	if err := getJSON(c, apiURL("/healthz"), &h); err != nil {
		fmt.Fprintln(stderr, apiError("status", path, err))
		return 1
	}
	if err := getJSON(c, apiURL("/agents"), &agents); err != nil {
		fmt.Fprintf(stderr, "supervisor: status: %s: /agents: %v\n", path, err)
		return 1
	}
	printStatus(stdout, path, h, agents, time.Now())
	return 0
}

func getJSON(c *http.Client, url string, v any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

const statusWidth = 80

func printStatus(w io.Writer, addr string, h api.HealthView, agents []api.AgentView, now time.Time) {
	last := "none yet"
	if t, err := time.Parse(time.RFC3339Nano, h.LastSnap); err == nil {
		last = t.Local().Format("15:04:05") + " (" + short(now.Sub(t)) + " ago)"
	}
	db := "database " + h.Database
	switch {
	case h.Database == "none":
		db += fmt.Sprintf(" (spool only, %d rows)", h.SpoolRows)
	case h.SpoolRows > 0:
		db += fmt.Sprintf(" (%d spooled)", h.SpoolRows)
	}
	maxAge := h.MaxAge
	if d, err := time.ParseDuration(h.MaxAge); err == nil {
		maxAge = short(d)
	}
	snap := fmt.Sprintf("%s  last snapshot %s", db, last)
	if h.Retrying > 0 {
		snap = fmt.Sprintf("%d kills retrying  %s", h.Retrying, snap)
	}
	lines := []string{
		// The socket's path last: a long one is what the clip cuts.
		fmt.Sprintf("supervisor  source %s  %.0f events/s  %d lost  %d resyncs  at %s",
			h.Source, h.Rate, h.EventsLost, h.Resyncs, addr),
		fmt.Sprintf("max age %s  processes %d  agents %d  sessions %d (%d processes)  leftovers %d",
			maxAge, h.Processes, h.Agents, h.Sessions, h.Members, h.Leftovers),
		snap,
	}
	if h.DryRun {
		lines = append(lines, "DRY RUN: nothing is signalled")
	}
	for _, c := range h.Degraded { // reaping goes on; rows or state do not go where they belong
		lines = append(lines, "DEGRADED: "+c)
	}
	for _, l := range lines {
		fmt.Fprintln(w, clip(l))
	}
	fmt.Fprintln(w)
	var live, ended []api.AgentView
	for _, a := range agents {
		if a.ExitedAt == nil {
			live = append(live, a)
		} else {
			ended = append(ended, a)
		}
	}
	printAgents(w, live, now)
	printLeftovers(w, ended, now)
}

func printAgents(w io.Writer, agents []api.AgentView, now time.Time) {
	if len(agents) == 0 {
		fmt.Fprintln(w, "no agents tracked")
		return
	}
	fmt.Fprintf(w, "%7s  %-15s %8s %8s %6s %5s %5s  %s\n", "PID", "COMM", "AGE", "LEFT", "MEM", "PROCS", "CPU%", "MAX AGE USED")
	for _, a := range agents {
		age := now.Sub(a.StartedAt)
		total := a.Deadline.Sub(a.StartedAt)
		left := time.Duration(a.SecondsLeft * float64(time.Second))
		frac := 1.0
		if total > 0 {
			frac = min(max(float64(age)/float64(total), 0), 1)
		}
		const barLen = 10
		n := int(frac*barLen + 0.5)
		bar := "[" + strings.Repeat("#", n) + strings.Repeat(".", barLen-n) + "]"
		leftS, barS := short(left), fmt.Sprintf("%s %3.0f%%", bar, frac*100)
		switch {
		case a.State == api.StateRetrying: // its kill failed: tried again, until it is gone
			leftS, barS = api.StateRetrying, fmt.Sprintf("retry %d", a.Attempt)
			if a.NextAttempt != nil {
				barS += " in " + short(a.NextAttempt.Sub(now))
			}
		case a.Deadline.IsZero(): // no deadline: an exempt session, or one being killed
			leftS, barS = "-", "-"
			if a.SessionFigures != nil && a.SessionFigures.Exempt {
				leftS, barS = "kept", "exempt"
			}
		}
		mem, procs, cpu := "-", "-", "-"
		if f := a.SessionFigures; f != nil {
			// The whole session's, kept members included.
			mem, procs, cpu = bytesShort(f.MemoryBytes+f.KeptMemoryBytes), fmt.Sprint(f.Procs+f.KeptProcs), fmt.Sprintf("%.0f", f.CPUPercent)
		}
		fmt.Fprintf(w, "%7d  %-15s %8s %8s %6s %5s %5s  %s\n", a.PID, comm15(a.Comm), short(age), leftS,
			mem, clipTo(procs, 5), clipTo(cpu, 5), barS)
	}
}

// printLeftovers lists, per session whose agent has exited, the processes
// that outlived it and the countdown to their kill.
func printLeftovers(w io.Writer, sessions []api.AgentView, now time.Time) {
	if len(sessions) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "LEFTOVERS (their agent exited; killed when the leftover grace ends)")
	fmt.Fprintf(w, "%7s  %-15s %7s  %-15s %9s %9s\n", "PID", "COMM", "SESSION", "AGENT", "EXITED", "KILL IN")
	for _, s := range sessions {
		exited := short(now.Sub(*s.ExitedAt)) + " ago"
		for _, l := range s.Leftovers {
			left := time.Duration(l.SecondsLeft * float64(time.Second))
			fmt.Fprintf(w, "%7d  %-15s %7d  %-15s %9s %9s\n", l.PID, comm15(l.Comm), s.PID, comm15(s.Comm), clipTo(exited, 9), short(left))
		}
	}
}

func comm15(c string) string { return clipTo(printable(c), 15) }

func clip(s string) string {
	if len(s) > statusWidth {
		return s[:statusWidth-1] + "…"
	}
	return s
}

func bytesShort(b int64) string { return termtext.Bytes(b) }
