package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

func TestParseUntil(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, loc)
	for in, want := range map[string]time.Time{
		"2026-05-04T12:30:00Z":      time.Date(2026, 5, 4, 12, 30, 0, 0, time.UTC),
		"2026-05-05 08:00":          time.Date(2026, 5, 5, 8, 0, 0, 0, loc),
		"2026-05-05T08:00:30":       time.Date(2026, 5, 5, 8, 0, 30, 0, loc),
		"14:15":                     time.Date(2026, 5, 4, 14, 15, 0, 0, loc),
		" 14:15:16 ":                time.Date(2026, 5, 4, 14, 15, 16, 0, loc),
		"2026-05-04T12:30:00+02:00": time.Date(2026, 5, 4, 10, 30, 0, 0, time.UTC),
	} {
		got, err := parseUntil(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "tomorrow", "25:00", "2026-13-01 00:00"} {
		if _, err := parseUntil(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// status and events find the API socket as the control commands find the
// control socket; --listen is accepted and said to be ignored.
func TestAPIFlagsResolve(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
		note bool
	}{
		{want: "/run/agent-supervisor/api.sock"},
		{args: []string{"--api-socket", "/x/api.sock"}, env: []string{"REAPER_API_SOCKET", "/y/api.sock"}, want: "/x/api.sock"},
		{args: []string{"--control-socket", "/x/control.sock"}, env: []string{"REAPER_API_SOCKET", "/y/api.sock"}, want: "/x/api.sock"},
		{env: []string{"REAPER_API_SOCKET", "/y/api.sock", "REAPER_CONTROL_SOCKET", "/z/control.sock"}, want: "/y/api.sock"},
		{env: []string{"REAPER_API_SOCKET", "auto", "REAPER_CONTROL_SOCKET", "/z/control.sock"}, want: "/z/api.sock"},
		{args: []string{"--listen", "127.0.0.1:9847"}, want: "/run/agent-supervisor/api.sock", note: true},
	} {
		af := newAPIFlags("status")
		if err := af.fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		if got := af.resolve(env(c.env...), &stderr); got != c.want {
			t.Errorf("%v %v: %q, want %q", c.args, c.env, got, c.want)
		}
		if note := strings.Contains(stderr.String(), "--listen is ignored"); note != c.note {
			t.Errorf("%v: stderr %q", c.args, stderr.String())
		}
	}
}

func TestParsePIDStart(t *testing.T) {
	for _, c := range []struct {
		in, start, err string
		pid            int32
	}{
		{in: "1234", pid: 1234},
		{in: "1234@2026-11-27T16:23:24.51621768Z", pid: 1234, start: "2026-11-27T16:23:24.51621768Z"},
		{in: "1234@2026-11-27T17:23:24.51621768+01:00", pid: 1234, start: "2026-11-27T17:23:24.51621768+01:00"},
		{in: "0@2026-11-27T16:23:24Z", err: "invalid PID"},
		{in: "x", err: "invalid PID"},
		{in: "12@", err: "invalid START"},
		{in: "12@16:23", err: "invalid START"},
	} {
		pid, start, err := parsePIDStart(c.in)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
		case err != nil || pid != c.pid || start != c.start:
			t.Errorf("%q: %d %q %v, want %d %q", c.in, pid, start, err, c.pid, c.start)
		}
	}
}

// env is the environment a test gives the code it runs.
var env = testutil.Env
