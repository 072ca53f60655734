package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// fakeControlTable records what the handler asked of the table.
type fakeControlTable struct {
	calls []string
	extra time.Duration
	until int64
	by    string
	force bool
	err   error
}

func (f *fakeControlTable) Extend(pid int32, _ tracker.Start, d time.Duration) (tracker.LeaseResult, error) {
	f.calls = append(f.calls, "extend")
	f.extra += d
	return tracker.LeaseResult{PID: pid, Comm: "claude", Deadline: 1e12 + int64(f.extra), Extra: f.extra}, f.err
}

func (f *fakeControlTable) ExtendUntil(pid int32, _ tracker.Start, until int64) (tracker.LeaseResult, error) {
	f.calls = append(f.calls, "until")
	f.until = until
	return tracker.LeaseResult{PID: pid, Comm: "claude", Deadline: until}, f.err
}

func (f *fakeControlTable) Keep(pid int32, _ tracker.Start) (tracker.LeaseResult, error) {
	f.calls = append(f.calls, "keep")
	return tracker.LeaseResult{PID: pid, Comm: "node", Dequeued: []int32{pid, 77}}, f.err
}

func (f *fakeControlTable) Unkeep(pid int32, _ tracker.Start) (tracker.LeaseResult, error) {
	f.calls = append(f.calls, "unkeep")
	return tracker.LeaseResult{PID: pid, Comm: "node"}, f.err
}

func (f *fakeControlTable) KillNow(pid int32, _ tracker.Start, force bool, by string, allow func(int32, bool) bool) (tracker.LeaseResult, error) {
	f.calls = append(f.calls, "kill")
	f.by, f.force = by, force
	return tracker.LeaseResult{PID: pid, Comm: "exe", Session: tracker.SessionID{PID: 40}, Queued: []int32{40, 41}}, f.err
}

type fixedClock struct{ now int64 }

func (c fixedClock) Now() int64        { return c.now }
func (c fixedClock) BootOffset() int64 { return 0 }

func TestControllerHandle(t *testing.T) {
	tb := &fakeControlTable{}
	saves, reloads := 0, 0
	var saveErr, reloadErr error
	c := &controller{table: tb, clock: fixedClock{1e12}, save: func() error { saves++; return saveErr },
		reload: func() error { reloads++; return reloadErr }, allow: func(pid int32, _ bool) bool { return pid != 1 }}
	peer := control.Peer{UID: 0, PID: 4321}

	// Never PID 1 (the guard's rule), for keep too: keeping it would exempt
	// the whole host. --force is root's alone.
	for _, cmd := range []string{"keep", "unkeep", "kill"} {
		if r := c.handle(peer, control.Request{Cmd: cmd, PID: 1}); !strings.Contains(r.Error, "protected") {
			t.Errorf("%s 1: %+v", cmd, r)
		}
	}
	if r := c.handle(control.Peer{UID: 1000, PID: 4322}, control.Request{Cmd: "kill", PID: 41, Force: true}); !strings.Contains(r.Error, "root only") {
		t.Errorf("kill --force by uid 1000: %+v", r)
	}
	if r := c.handle(peer, control.Request{Cmd: "extend", PID: 12, Until: time.Now().AddDate(5, 0, 0).Format(time.RFC3339)}); r.Error == "" {
		t.Errorf("--until five years away accepted: %+v", r)
	}

	r := c.handle(peer, control.Request{Cmd: "extend", PID: 12, Duration: "90m"})
	if r.Error != "" || !strings.Contains(r.Message, "pid 12 (claude): deadline") || !strings.Contains(r.Message, "1h30m0s in all") ||
		r.Deadline == nil || saves != 1 {
		t.Errorf("extend: %+v, %d saves", r, saves)
	}
	for _, bad := range []control.Request{
		{Cmd: "extend", PID: 12, Duration: "0s"},
		{Cmd: "extend", PID: 12, Duration: "soon"},
		{Cmd: "extend", PID: 12, Duration: "9000h"},
		{Cmd: "extend", PID: 12, Duration: "1h", Until: "2030-01-01T00:00:00Z"},
		{Cmd: "extend", PID: 12, Until: "tomorrow"},
	} {
		if r := c.handle(peer, bad); r.Error == "" {
			t.Errorf("%+v accepted: %+v", bad, r)
		}
	}
	until := time.Now().Add(time.Hour)
	r = c.handle(peer, control.Request{Cmd: "extend", PID: 12, Until: until.Format(time.RFC3339Nano)})
	if got := time.Duration(tb.until - 1e12); r.Error != "" || got < 59*time.Minute || got > time.Hour {
		t.Errorf("until: %+v, boottime %s from now", r, got)
	}

	r = c.handle(peer, control.Request{Cmd: "kill", PID: 41})
	if r.Error != "" || tb.by != "uid 0 pid 4321" || tb.force || !strings.Contains(r.Message, "session of agent 40") ||
		len(r.PIDs) != 2 {
		t.Errorf("kill: %+v, requested by %q", r, tb.by)
	}
	c.dryRun = true
	if r = c.handle(peer, control.Request{Cmd: "kill", PID: 41, Force: true}); !tb.force || !strings.Contains(r.Message, "dry run") {
		t.Errorf("kill --force in a dry run: %+v", r)
	}

	r = c.handle(peer, control.Request{Cmd: "keep", PID: 12})
	if r.Error != "" || !strings.Contains(r.Message, "taken back: 12, 77") {
		t.Errorf("keep: %+v", r)
	}
	// Applied but not saved: an error that says both.
	saveErr = errors.New("disk full")
	if r = c.handle(peer, control.Request{Cmd: "unkeep", PID: 12}); !strings.Contains(r.Error, "could not be saved") ||
		!strings.Contains(r.Error, "disk full") {
		t.Errorf("unkeep with a failing save: %+v", r)
	}
	tb.err = tracker.ErrNoProcess
	if r = c.handle(peer, control.Request{Cmd: "keep", PID: 12}); r.Error != tracker.ErrNoProcess.Error() {
		t.Errorf("keep of a gone process: %+v", r)
	}
	reloadErr = errors.New("conf: REAPER_MAX_AGE: invalid duration")
	if r = c.handle(peer, control.Request{Cmd: "reload"}); !strings.Contains(r.Error, "REAPER_MAX_AGE") || reloads != 1 {
		t.Errorf("reload of a bad file: %+v", r)
	}
	reloadErr = nil
	if r = c.handle(peer, control.Request{Cmd: "reload"}); r.Message != "ok" {
		t.Errorf("reload: %+v", r)
	}
}

func TestControlConfig(t *testing.T) {
	c, err := config.Parse("run", nil, func(string) string { return "" }, nil)
	if err != nil || c.ControlSocket != config.DefaultControlSocket || c.ControlGID != -1 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = config.Parse("run", []string{"--control-socket", "", "--control-group", "0"}, func(string) string { return "" }, nil)
	if err != nil || c.ControlSocket != "" || c.ControlGID != 0 {
		t.Errorf("empty socket, gid 0: %+v %v", c, err)
	}
	c, err = config.Parse("run", nil, func(k string) string {
		return map[string]string{"REAPER_CONTROL_GROUP": "root", "REAPER_CONTROL_SOCKET": "/tmp/x.sock"}[k]
	}, nil)
	if err != nil || c.ControlGID != 0 || c.ControlSocket != "/tmp/x.sock" {
		t.Errorf("from the environment: %+v %v", c, err)
	}
	for _, args := range [][]string{{"--control-group", "no-such-group-here"}, {"--control-socket", "relative.sock"}} {
		if _, err := config.Parse("run", args, func(string) string { return "" }, nil); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v, want an error naming the flag", args, err)
		}
	}
}
