package top

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/store"
)

// Snapshot is one reading of the daemon: /healthz and /agents.
type Snapshot struct {
	Health api.HealthView
	Agents []api.AgentView
}

// Kill is one row of "Last kills", from a kill event.
type Kill struct {
	At         time.Time `json:"signalled_at"`
	PID        int32     `json:"pid"`
	Comm       string    `json:"comm"`
	Reason     string    `json:"reason"`
	Outcome    string    `json:"outcome"`
	LatenessMS float64   `json:"lateness_ms"`
}

// Source is where the model's data comes from and where its actions go:
// the daemon's sockets (daemonSource), or a fake in the model's tests.
type Source interface {
	// Snapshot reads /healthz and /agents, with the members of the
	// sessions headed by members.
	Snapshot(ctx context.Context, members []int32) (Snapshot, error)
	// Control sends one control request and returns the daemon's message,
	// or an error to show (a refusal, no control socket).
	Control(ctx context.Context, req control.Request) (string, error)
}

// daemonSource reads the daemon's API socket and talks to its control
// socket.
type daemonSource struct {
	api, control string
	http         *http.Client
}

func newDaemonSource(apiPath, controlPath string) *daemonSource {
	return &daemonSource{api: apiPath, control: controlPath, http: apiHTTP(apiPath, 5*time.Second)}
}

// apiHTTP is an HTTP client that dials the API socket at path; timeout 0
// is no overall timeout (the stream).
func apiHTTP(path string, timeout time.Duration) *http.Client { return api.Client(path, timeout, true) }

const apiBase = "http://supervisor"

func (s *daemonSource) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiBase+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return apiError(s.api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && !(path == "/healthz" && resp.StatusCode == http.StatusServiceUnavailable) {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s answered %s: %s", path, s.api, resp.Status, printable(strings.TrimSpace(string(b))))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s: %s: %w", path, s.api, err)
	}
	return nil
}

func (s *daemonSource) Snapshot(ctx context.Context, members []int32) (Snapshot, error) {
	var snap Snapshot
	if err := s.get(ctx, "/healthz", &snap.Health); err != nil {
		return snap, err
	}
	path := "/agents"
	if len(members) > 0 {
		ids := make([]string, 0, len(members))
		for _, p := range members[:min(len(members), api.MaxMemberSessions)] {
			ids = append(ids, strconv.Itoa(int(p)))
		}
		path += "?members=" + strings.Join(ids, ",")
	}
	err := s.get(ctx, path, &snap.Agents)
	return snap, err
}

// all is a snapshot with every session's members (--json).
func (s *daemonSource) all(ctx context.Context) (Snapshot, error) {
	var snap Snapshot
	if err := s.get(ctx, "/healthz", &snap.Health); err != nil {
		return snap, err
	}
	err := s.get(ctx, "/agents?members=all", &snap.Agents)
	return snap, err
}

func (s *daemonSource) Control(ctx context.Context, req control.Request) (string, error) {
	if s.control == "" {
		return "", errors.New("read-only: no control socket given")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, s.control, req)
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return "", fmt.Errorf("%s refused: permission denied on %s (the control socket is for root and members of the daemon's --control-group)", req.Cmd, s.control)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return "", fmt.Errorf("%s: no daemon answers on %s: read-only", req.Cmd, s.control)
	case err != nil:
		return "", fmt.Errorf("%s: %s: %v", req.Cmd, s.control, err)
	case resp.Error != "":
		return "", fmt.Errorf("%s refused: %s", req.Cmd, printable(resp.Error))
	}
	return printable(resp.Message), nil
}

// followKills reads GET /events?types=kill until ctx ends or the stream
// does, handing each kill to send. Once the daemon has answered (it
// subscribes the stream before it answers) it calls opened, which reads
// /kills then: a kill between the two is in one or the other, or both
// (AddKill drops the second). It returns why the stream ended.
func (s *daemonSource) followKills(ctx context.Context, opened func(), send func(Kill)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiBase+"/events?types=kill", nil)
	if err != nil {
		return err
	}
	resp, err := apiHTTP(s.api, 0).Do(req)
	if err != nil {
		return apiError(s.api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/events: %s answered %s", s.api, resp.Status)
	}
	opened()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // a kill record lists every descendant
	for sc.Scan() {
		var ev events.Kill
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Type != events.TypeKill {
			continue
		}
		send(killOf(&ev))
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("/events: %w", err)
	}
	return errors.New("the daemon ended the event stream")
}

func killOf(ev *events.Kill) Kill {
	k := killOfRow(&ev.KillRow)
	if k.At.IsZero() {
		k.At = ev.Time
	}
	return k
}

func killOfRow(r *store.KillRow) Kill {
	return Kill{At: r.SignalledAt, PID: r.PID, Comm: r.Comm, Reason: r.Reason, Outcome: r.Outcome, LatenessMS: r.LatenessMS}
}

// recentKills reads GET /kills: the daemon's last kills, newest first
// (none from a daemon that does not serve it).
func (s *daemonSource) recentKills(ctx context.Context) []Kill {
	var rows []store.KillRow
	if s.get(ctx, "/kills", &rows) != nil {
		return nil
	}
	out := make([]Kill, 0, len(rows))
	for i := range rows {
		out = append(out, killOfRow(&rows[i]))
	}
	return out
}

// apiError explains a failure to reach the API socket at path.
func apiError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s: the API socket is for root (and members of the daemon's --control-group)", path)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no daemon answers on %s (is it running, with this --api-socket or --control-socket?)", path)
	}
	return fmt.Errorf("%s: %v", path, err)
}
