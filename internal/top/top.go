package top

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/config"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/term"
)

// Run is `supervisor top`: the live view in a terminal, one frame as
// plain text with --once or when stdout is not a terminal, one JSON
// document with --json. Exit 0, 1 when no daemon answers, 2 on a usage
// error.
func Run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := config.NewFlagSet("top")
	once := config.Bool(fs, "once")
	asJSON := config.Bool(fs, "json")
	apiSock := config.String(fs, "api-socket")
	ctlSock := config.String(fs, "control-socket")
	_ = config.String(fs, "listen")
	if code, done := config.ParseFlags(fs, args, stdout, stderr); done {
		return code
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "supervisor: top: want %s and no arguments\n", config.Synopsis("top"))
		return 2
	}
	if given["listen"] {
		fmt.Fprintln(stderr, "supervisor: top: --listen is ignored: /agents and /events are served on the daemon's API socket only")
	}
	ctl := config.DefaultControlSocket
	switch {
	case given["control-socket"]:
		ctl = *ctlSock
	case getenv("REAPER_CONTROL_SOCKET") != "":
		ctl = getenv("REAPER_CONTROL_SOCKET")
	}
	apiPath := config.APISocketBeside(ctl)
	switch {
	case given["api-socket"]:
		apiPath = *apiSock
	case given["control-socket"]:
	case getenv("REAPER_API_SOCKET") != "" && getenv("REAPER_API_SOCKET") != config.APISocketAuto:
		apiPath = getenv("REAPER_API_SOCKET")
	}
	if apiPath == "" {
		fmt.Fprintf(stderr, "supervisor: top: no API socket (--api-socket or --control-socket is empty)\n")
		return 2
	}
	src := newDaemonSource(apiPath, ctl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if *asJSON {
		snap, err := src.all(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "supervisor: top: %v\n", err)
			return 1
		}
		if err := writeJSON(stdout, snap, src.recentKills(ctx)); err != nil {
			return 1
		}
		return 0
	}
	snap, err := src.Snapshot(ctx, nil)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: top: %v\n", err)
		return 1
	}
	color := getenv("NO_COLOR") == ""
	tty := isTerminal(stdout) && isTerminal(os.Stdin)
	if *once || !tty {
		m := NewModel(src, time.Now, false)
		m.SetSnapshot(snap)
		m.setKills(src.recentKills(ctx))
		w := 80
		if f, ok := stdout.(*os.File); ok && tty {
			if tw, _, err := term.GetSize(f.Fd()); err == nil && tw > 0 {
				w = tw
			}
		} else if c, err := strconv.Atoi(getenv("COLUMNS")); err == nil && c > 0 {
			w = c
		}
		if _, err := fmt.Fprintln(stdout, m.Frame(w, 0)); err != nil {
			return 1
		}
		return 0
	}
	m := NewModel(src, time.Now, color)
	m.SetSnapshot(snap)
	// Each refresh decodes the whole /agents (about 0.7 MB at 1,000
	// sessions) and drops the last: the live heap is a few MB, so a
	// collection every 4× of it instead of 2× halves the collector's
	// share of top's CPU at a cost of some MB.
	debug.SetGCPercent(400)
	// 20 frames a second at most: keys still answer within 50 ms, and an
	// idle view wakes the renderer a third as often as the default 60.
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithOutput(stdout), tea.WithFPS(20))
	streamCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go followStream(streamCtx, src, p.Send)
	if _, err := p.Run(); err != nil {
		fmt.Fprintf(stderr, "supervisor: top: %v\n", err)
		return 1
	}
	return 0
}

// The event stream's reconnection: after it ends, top opens it again
// after reconnectMin, doubling up to reconnectMax while it keeps failing.
const (
	reconnectMin = time.Second
	reconnectMax = 10 * time.Second
)

// followStream keeps the kill stream open until ctx ends: it subscribes,
// then seeds Last kills from /kills (so no kill falls between the two),
// hands each kill to send, and when the stream ends (a daemon restart, a
// client dropped as too slow) says so and opens it again with backoff.
func followStream(ctx context.Context, src *daemonSource, send func(tea.Msg)) {
	wait := reconnectMin
	for {
		err := src.followKills(ctx, func() {
			wait = reconnectMin
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			send(streamUpMsg(src.recentKills(rctx)))
		}, func(k Kill) { send(killMsg(k)) })
		if ctx.Err() != nil {
			return
		}
		send(streamMsg{err: err, retry: wait})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, reconnectMax)
	}
}

// SetSnapshot hands the model a snapshot (the first one, read before the
// view starts, and in tests).
func (m *Model) SetSnapshot(s Snapshot) {
	m.Update(snapMsg{snap: s})
}

// setKills puts the daemon's last kills (newest first) under Last kills.
func (m *Model) setKills(ks []Kill) {
	for i := len(ks) - 1; i >= 0; i-- {
		m.AddKill(ks[i])
	}
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}

// jsonDoc is --json's document.
type jsonDoc struct {
	Time     time.Time       `json:"time"`
	Health   api.HealthView  `json:"health"`
	Sessions []api.AgentView `json:"sessions"`
	Kills    []Kill          `json:"recent_kills"`
}

func writeJSON(w io.Writer, snap Snapshot, kills []Kill) error {
	if snap.Agents == nil {
		snap.Agents = []api.AgentView{}
	}
	if kills == nil {
		kills = []Kill{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonDoc{Time: time.Now().UTC(), Health: snap.Health, Sessions: snap.Agents, Kills: kills})
}
