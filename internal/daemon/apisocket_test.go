package daemon

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/events"
)

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
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		af := addAPIFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		if got := af.resolve(fs, "status", env(c.env...), &stderr); got != c.want {
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

// The API socket's caps: root's connections are its own, a member's are
// few and the members' together bounded, peers without access get a few
// slots of their own; /events streams per member are few and root's are
// kept apart.
func TestAPIAdmit(t *testing.T) {
	var a apiState
	var rel []func()
	take := func(uid uint32, ok bool) bool {
		r, _ := a.admit(uid, ok)
		if r != nil {
			rel = append(rel, r)
		}
		return r != nil
	}
	for i := range apiConnsPerUID {
		if !take(1000, true) {
			t.Fatalf("member connection %d refused", i)
		}
	}
	if take(1000, true) {
		t.Errorf("a member got more than %d connections", apiConnsPerUID)
	}
	for uid := uint32(1001); take(uid, true); uid++ {
	}
	if n := a.groupConns; n != APIGroupConns {
		t.Errorf("members hold %d connections, want the cap %d", n, APIGroupConns)
	}
	for i := range apiForbiddenConns {
		if !take(2000+uint32(i), false) {
			t.Fatalf("forbidden peer %d not answered", i)
		}
	}
	if take(3000, false) {
		t.Errorf("more than %d peers without access held connections", apiForbiddenConns)
	}
	for i := range apiRootConns {
		if !take(0, true) {
			t.Fatalf("root's connection %d refused while the members hold theirs", i)
		}
	}
	if take(0, true) {
		t.Errorf("root past its own cap")
	}
	for _, r := range rel {
		r()
		r() // once only
	}
	if a.groupConns != 0 || a.rootConns != 0 || a.forbidden != 0 || len(a.uidConns) != 0 {
		t.Errorf("slots left after release: %+v", &a)
	}

	var streams []func()
	for uid := uint32(1000); ; uid++ {
		n := 0
		for {
			r := a.stream(uid)
			if r == nil {
				break
			}
			streams = append(streams, r)
			n++
		}
		if n == 0 {
			break
		}
		if n > APIStreamsPerUID {
			t.Fatalf("uid %d got %d streams", uid, n)
		}
	}
	if a.streams != events.MaxSubscribers-apiRootStreams {
		t.Errorf("members hold %d streams, want %d", a.streams, events.MaxSubscribers-apiRootStreams)
	}
	if a.stream(0) == nil {
		t.Error("root refused a stream")
	}
	for _, r := range streams {
		r()
		r()
	}
	if a.streams != 0 || len(a.uidStreams) != 0 {
		t.Errorf("streams left after release: %d %v", a.streams, a.uidStreams)
	}
}
