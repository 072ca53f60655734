package top

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/control"
	tea "github.com/charmbracelet/bubbletea"
)

var update = flag.Bool("update", false, "rewrite the golden frames in testdata")

// t0 is the tests' now.
var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }
func ptr[T any](v T) *T            { return &v }

// fakeSource is a Source for the model's tests: a fixed snapshot, and the
// control requests it was sent.
type fakeSource struct {
	snap    Snapshot
	members [][]int32
	reqs    []control.Request
	refuse  error
}

func (f *fakeSource) Snapshot(_ context.Context, members []int32) (Snapshot, error) {
	f.members = append(f.members, members)
	return f.snap, nil
}

func (f *fakeSource) Control(_ context.Context, req control.Request) (string, error) {
	f.reqs = append(f.reqs, req)
	if f.refuse != nil {
		return "", f.refuse
	}
	return "ok: " + req.Cmd, nil
}

// fixture is a daemon's view with a session in every state.
func fixture() Snapshot {
	h := api.HealthView{Status: "ok", Source: "netlink", Host: "node-7", Sessions: 6, Members: 14, Leftovers: 2,
		Rate: 41, EventsLost: 3, Database: "up", MaxAge: "2h0m0s", PressureSomeAvg10: ptr(0.25)}
	fig := func(mem int64, cpu float64, procs int) *api.SessionFigures {
		return &api.SessionFigures{MemoryBytes: mem, CPUPercent: cpu, Procs: procs}
	}
	return Snapshot{Health: h, Agents: []api.AgentView{
		{PID: 6160, Comm: "aider", StartedAt: at(-3 * time.Hour), Deadline: at(12 * time.Second), SessionPID: 6160,
			ExitedAt: ptr(at(-2 * time.Minute)), Reason: "leftover", SessionFigures: fig(80<<20, 0, 2),
			Leftovers: []api.LeftoverView{{PID: 6170, Comm: "node", StartedAt: at(-time.Hour), KillAt: at(12 * time.Second)}}},
		{PID: 7100, Comm: "gemini", Cmdline: "gemini --yolo", StartedAt: at(-2*time.Hour - 5*time.Minute), Deadline: at(-5 * time.Minute),
			State: api.StateRetrying, Attempt: 2, NextAttempt: ptr(at(3 * time.Second)), SessionPID: 7100},
		{PID: 4242, Comm: "claude", Cmdline: "claude --dangerously-skip-permissions", StartedAt: at(-70 * time.Minute),
			Deadline: at(50 * time.Minute), SessionPID: 4242, Members: 4, SessionFigures: fig(512<<20, 12.5, 4),
			Info: cgroupinfo.Info{ContainerID: "3f2a9c1b7e6d5a4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c"},
			MemberList: []api.MemberView{
				{PID: 4242, PPID: 1, Comm: "claude", Cmdline: "claude --dangerously-skip-permissions", MemoryBytes: ptr[int64](300 << 20)},
				{PID: 4250, PPID: 4242, Comm: "node", Cmdline: "node /usr/lib/node_modules/mcp-server/index.js --stdio", MemoryBytes: ptr[int64](150 << 20)},
				{PID: 4251, PPID: 4250, Comm: "rg", Cmdline: "rg --json TODO .", MemoryBytes: ptr[int64](12 << 20)},
				{PID: 4260, PPID: 4242, Comm: "npm", Cmdline: "npm run dev", MemoryBytes: ptr[int64](50 << 20), Kept: true},
			}},
		{PID: 5151, Comm: "codex", Cmdline: "codex exec 'fix the build'", StartedAt: at(-3 * time.Hour), Deadline: at(time.Hour),
			SessionPID: 5151, Members: 2, SessionFigures: fig(1<<30+300<<20, 97, 2)},
		{PID: 7000, Comm: "claude", Cmdline: "claude --resume", StartedAt: at(-26 * time.Hour), SessionPID: 7000,
			SessionFigures: &api.SessionFigures{MemoryBytes: 0, KeptMemoryBytes: 2 << 30, KeptProcs: 5, Exempt: true}},
		{PID: 7200, Comm: "cursor-agent", StartedAt: at(-90 * time.Minute), SessionPID: 7200,
			SessionFigures: &api.SessionFigures{MemoryBytes: 40 << 20, CPUPercent: 3, Procs: 3, Killing: true}},
	}}
}

func newTestModel(t *testing.T) (*Model, *fakeSource) {
	t.Helper()
	src := &fakeSource{snap: fixture()}
	m := NewModel(src, func() time.Time { return t0 }, false)
	m.SetSnapshot(src.snap)
	m.AddKill(Kill{At: at(-40 * time.Second), PID: 3999, Comm: "claude", Reason: "max_age", Outcome: "terminated", LatenessMS: 0.4})
	m.AddKill(Kill{At: at(-3 * time.Second), PID: 4001, Comm: "codex", Reason: "manual", Outcome: "terminated", LatenessMS: 0.2})
	return m, src
}

func press(m *Model, keys ...string) tea.Cmd {
	var cmd tea.Cmd
	for _, k := range keys {
		var msg tea.KeyMsg
		switch k {
		case "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		case "up":
			msg = tea.KeyMsg{Type: tea.KeyUp}
		case "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		case "ctrl+c":
			msg = tea.KeyMsg{Type: tea.KeyCtrlC}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd = m.Update(msg)
	}
	return cmd
}

// do runs an action's command and hands its result back to the model.
func do(t *testing.T, m *Model, cmd tea.Cmd) {
	t.Helper()
	if cmd == nil {
		t.Fatal("no command")
	}
	msg := cmd()
	if _, ok := msg.(actionMsg); !ok {
		t.Fatalf("command gave %T, want an action's result", msg)
	}
	m.Update(msg)
}

func selected(m *Model) int32 {
	r, _ := m.selected()
	return r.PID
}

func TestSortAndMove(t *testing.T) {
	m, _ := newTestModel(t)
	var order []int32
	for _, r := range m.rows {
		order = append(order, r.PID)
	}
	// LEFT: the retry in 3 s, the leftovers in 12 s, then deadlines; none last.
	want := []int32{7100, 6160, 4242, 5151, 7000, 7200}
	if !equal(order, want) {
		t.Fatalf("LEFT order %v, want %v", order, want)
	}
	press(m, "j", "j")
	if selected(m) != 4242 {
		t.Fatalf("after j j: %d selected", selected(m))
	}
	press(m, "s") // MEM: the selection stays on its session
	if m.sortBy != sortMem || m.rows[0].PID != 7000 || selected(m) != 4242 {
		t.Errorf("MEM: first %d, selected %d", m.rows[0].PID, selected(m))
	}
	press(m, "s")
	if m.sortBy != sortCPU || m.rows[0].PID != 5151 {
		t.Errorf("CPU: first %d", m.rows[0].PID)
	}
	press(m, "s")
	if m.sortBy != sortAge || m.rows[0].PID != 7000 {
		t.Errorf("AGE: first %d", m.rows[0].PID)
	}
	press(m, "s")
	if m.sortBy != sortLeft {
		t.Errorf("s four times: sort %v", m.sortBy)
	}
	press(m, "k", "up", "up", "up")
	if m.sel != 0 {
		t.Errorf("up past the top: row %d", m.sel)
	}
	for range 10 {
		press(m, "down")
	}
	if m.sel != len(m.rows)-1 {
		t.Errorf("down past the end: row %d", m.sel)
	}
}

// One snapshot at a time: a tick while one is being read only re-arms
// the clock.
func TestOneFetchAtATime(t *testing.T) {
	m, src := newTestModel(t)
	_, cmd := m.Update(tickMsg(t0))
	if cmd == nil || !m.fetching {
		t.Fatal("tick did not fetch")
	}
	n := len(src.members)
	m.Update(tickMsg(t0))
	m.fetch()() // the first answer comes
	if len(src.members) != n+1 {
		t.Errorf("%d snapshots read", len(src.members)-n)
	}
	m.Update(snapMsg{snap: src.snap})
	if m.fetching {
		t.Error("still fetching after the answer")
	}
}

func TestStates(t *testing.T) {
	m, _ := newTestModel(t)
	want := map[int32]string{7100: "retrying (2)", 6160: "leftovers in 12s", 4242: "running", 5151: "extended", 7000: "kept", 7200: "being killed"}
	for _, r := range m.rows {
		if got := state(r, 2*time.Hour, t0); got != want[r.PID] {
			t.Errorf("%d: state %q, want %q", r.PID, got, want[r.PID])
		}
	}
}

// TestStatesWithoutDeadline: a row with no deadline is "being killed"
// only when the daemon says so; leftovers left alone (--leftovers keep,
// REAPER_KEEP=1) and an agent without a deadline say what they are, and
// K keeps them (it unkeeps only a root-kept session).
func TestStatesWithoutDeadline(t *testing.T) {
	exited := ptr(at(-time.Minute))
	rows := []struct {
		a    api.AgentView
		want string
	}{
		{api.AgentView{PID: 1, ExitedAt: exited, SessionFigures: &api.SessionFigures{Procs: 2}}, "leftovers kept"},
		{api.AgentView{PID: 2, ExitedAt: exited, SessionFigures: &api.SessionFigures{Procs: 2, Killing: true}}, "being killed"},
		{api.AgentView{PID: 3, SessionFigures: &api.SessionFigures{Procs: 1}}, "no deadline"},
		{api.AgentView{PID: 4, SessionFigures: &api.SessionFigures{Procs: 1, Exempt: true}}, "kept"},
		{api.AgentView{PID: 5, ExitedAt: exited, SessionFigures: &api.SessionFigures{KeptProcs: 1, Exempt: true}}, "kept"},
		{api.AgentView{PID: 6, Deadline: at(time.Hour), StartedAt: at(-time.Hour), SessionFigures: &api.SessionFigures{Killing: true}}, "being killed"},
		{api.AgentView{PID: 7}, "no deadline"},
	}
	for _, r := range rows {
		if got := state(r.a, 2*time.Hour, t0); got != r.want {
			t.Errorf("%d: state %q, want %q", r.a.PID, got, r.want)
		}
	}

	// K on leftovers kept (the agent exited): keep, named by a live member
	// of the expanded session; without members, nothing is sent.
	src := &fakeSource{snap: Snapshot{Agents: []api.AgentView{rows[0].a}}}
	m := NewModel(src, func() time.Time { return t0 }, false)
	m.SetSnapshot(src.snap)
	if cmd := press(m, "K"); cmd != nil || len(src.reqs) != 0 || !strings.Contains(m.status, "expand") {
		t.Fatalf("K with no member to name: %d requests, status %q", len(src.reqs), m.status)
	}
	a := rows[0].a
	a.MemberList = []api.MemberView{{PID: 11, StartedAt: at(-time.Hour)}}
	src.snap.Agents = []api.AgentView{a}
	m.SetSnapshot(src.snap)
	do(t, m, press(m, "K"))
	if len(src.reqs) != 1 || src.reqs[0].Cmd != control.CmdKeep || src.reqs[0].PID != 11 {
		t.Fatalf("K on leftovers kept: %+v", src.reqs)
	}
	// K on a root-kept session whose agent exited: unkeep its kept member.
	a = rows[4].a
	a.MemberList = []api.MemberView{{PID: 12}, {PID: 13, Kept: true}}
	src.snap.Agents = []api.AgentView{a}
	m.SetSnapshot(src.snap)
	do(t, m, press(m, "K"))
	if len(src.reqs) != 2 || src.reqs[1].Cmd != control.CmdUnkeep || src.reqs[1].PID != 13 {
		t.Fatalf("K on a kept session: %+v", src.reqs)
	}
}

func TestFilter(t *testing.T) {
	m, _ := newTestModel(t)
	press(m, "/", "5", "1", "5")
	if len(m.rows) != 6 {
		t.Errorf("filter applied before enter: %d rows", len(m.rows))
	}
	press(m, "enter")
	if len(m.rows) != 0 || m.filter != "515" {
		t.Fatalf("filter 515 (a PID: exactly): %+v", m.rows)
	}
	press(m, "/", "esc", "/", "5", "1", "5", "1", "enter")
	if len(m.rows) != 1 || m.rows[0].PID != 5151 || m.filter != "5151" {
		t.Fatalf("filter 5151: %+v", m.rows)
	}
	// A member's PID (expanded: listed) or a leftover's finds its session.
	for _, f := range []string{"4251", "6170"} {
		press(m, "esc", "/"+f, "enter")
		if len(m.rows) != 1 || m.rows[0].PID != map[string]int32{"4251": 4242, "6170": 6160}[f] {
			t.Errorf("filter %s: %+v", f, m.rows)
		}
	}
	press(m, "esc")
	if len(m.rows) != 6 || m.filter != "" {
		t.Errorf("esc: %d rows, filter %q", len(m.rows), m.filter)
	}
	// By command line and by container ID, any case.
	press(m, "/", "D", "E", "V", "enter")
	if len(m.rows) != 0 {
		t.Errorf("a member's command line is not the session's: %d rows", len(m.rows))
	}
	press(m, "/", "esc")
	press(m, "/", "3", "f", "2", "a", "9", "enter")
	if len(m.rows) != 1 || m.rows[0].PID != 4242 {
		t.Errorf("container filter: %d rows", len(m.rows))
	}
	press(m, "esc")
	press(m, "/GeM", "enter") // typed faster than read: one message
	if m.filter != "GeM" {
		t.Errorf("/GeM in one message: filter %q", m.filter)
	}
	if len(m.rows) != 1 || m.rows[0].PID != 7100 {
		t.Errorf("command filter: %d rows", len(m.rows))
	}
}

func TestExpandAsksForMembers(t *testing.T) {
	m, src := newTestModel(t)
	press(m, "j", "j") // 4242
	cmd := press(m, "enter")
	if !m.expanded[4242] || cmd == nil {
		t.Fatal("enter did not expand")
	}
	cmd()
	if got := src.members[len(src.members)-1]; !equal(got, []int32{4242}) {
		t.Errorf("snapshot asked members of %v, want [4242]", got)
	}
	press(m, "enter")
	if m.expanded[4242] {
		t.Error("enter again did not fold")
	}
	press(m, "k") // 6160: a session whose agent exited can expand too
	press(m, "enter")
	if !m.expanded[6160] {
		t.Error("leftover session did not expand")
	}
}

func TestActions(t *testing.T) {
	m, src := newTestModel(t)
	press(m, "j", "j") // 4242
	press(m, "e")
	if m.mode != modeExtend {
		t.Fatal("e: no prompt")
	}
	do(t, m, press(m, "enter")) // the default
	r := src.reqs[0]
	if r.Cmd != "extend" || r.PID != 4242 || r.Duration != "30m" || r.Start != at(-70*time.Minute).Format(time.RFC3339Nano) {
		t.Errorf("extend request %+v", r)
	}
	if m.status != "ok: extend" {
		t.Errorf("status %q", m.status)
	}
	press(m, "e", "1", "h")
	do(t, m, press(m, "enter"))
	if r := src.reqs[1]; r.Duration != "1h" {
		t.Errorf("extend 1h: %+v", r)
	}
	press(m, "e", "x", "y")
	if cmd := press(m, "enter"); cmd != nil || !strings.Contains(m.status, "extend:") {
		t.Errorf("extend xy: status %q", m.status)
	}
	press(m, "e", "esc")
	if m.mode != modeNormal || len(src.reqs) != 2 {
		t.Error("esc did not cancel the extend")
	}

	press(m, "x")
	if !strings.Contains(m.Frame(80, 24), "kill session 4242 (claude) now? y confirms") {
		t.Error("x: no confirmation")
	}
	press(m, "n")
	if len(src.reqs) != 2 || m.status != "kill cancelled" {
		t.Errorf("x n: %v %q", src.reqs, m.status)
	}
	press(m, "x")
	do(t, m, press(m, "y"))
	if r := src.reqs[2]; r.Cmd != "kill" || r.PID != 4242 {
		t.Errorf("kill request %+v", r)
	}

	do(t, m, press(m, "K"))
	if r := src.reqs[3]; r.Cmd != "keep" || r.PID != 4242 {
		t.Errorf("K on a running session: %+v", r)
	}
	press(m, "j", "j") // 7000, kept
	do(t, m, press(m, "K"))
	if r := src.reqs[4]; r.Cmd != "unkeep" || r.PID != 7000 {
		t.Errorf("K on a kept session: %+v", r)
	}
	press(m, "k", "k", "k") // 6160: its agent exited; the session is named by its leftover
	do(t, m, press(m, "K"))
	if r := src.reqs[5]; r.PID != 6170 || r.Start != at(-time.Hour).Format(time.RFC3339Nano) {
		t.Errorf("K on a leftover session: %+v", r)
	}
}

func TestRefusalInStatusLine(t *testing.T) {
	m, src := newTestModel(t)
	src.refuse = errors.New("kill refused: permission denied: the control socket is for root and members of group 1001")
	press(m, "x")
	do(t, m, press(m, "y"))
	f := m.Frame(200, 24)
	if !strings.Contains(f, "kill refused: permission denied") {
		t.Errorf("refusal not on the status line:\n%s", f)
	}
	// A read error keeps the last snapshot on screen and says why.
	m.Update(snapMsg{err: errors.New("no daemon answers on /run/x")})
	if f := m.Frame(80, 24); !strings.Contains(f, "error: no daemon answers") || !strings.Contains(f, "4242") {
		t.Errorf("read error:\n%s", f)
	}
}

func TestKillsAndQuit(t *testing.T) {
	m, _ := newTestModel(t)
	m.Update(killMsg(Kill{At: at(0), PID: 4242, Comm: "claude", Reason: "manual", Outcome: "terminated", LatenessMS: 1.5}))
	if m.kills[0].PID != 4242 || !strings.Contains(m.Frame(80, 24), "12:00:00    4242 claude          manual") {
		t.Errorf("kill not first:\n%s", m.Frame(80, 24))
	}
	m.AddKill(m.kills[0]) // from GET /kills and the stream both: once
	if len(m.kills) != 3 {
		t.Errorf("a kill seen twice is listed twice: %d kills", len(m.kills))
	}
	for i := range 60 {
		m.AddKill(Kill{PID: int32(i)})
	}
	if len(m.kills) != maxKills {
		t.Errorf("%d kills kept", len(m.kills))
	}
	if cmd := press(m, "q"); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}
	m2, _ := newTestModel(t)
	if cmd := press(m2, "/", "ctrl+c"); cmd == nil || cmd() != tea.Quit() {
		t.Error("ctrl-c in a prompt does not quit")
	}
}

func TestEscapesProcessText(t *testing.T) {
	m, _ := newTestModel(t)
	m.snap.Agents[0].Comm = "evil\x1b[2J\n"
	m.rebuild()
	if f := m.Frame(120, 24); strings.ContainsAny(f, "\x1b") || !strings.Contains(f, `evil\x1b[2J\n`) {
		t.Errorf("escape sequence reached the frame:\n%q", f)
	}
}

// TestFrames are the golden frames: NO_COLOR, at 80×24 and narrower, the
// members of a session, the keys, and --once's.
func TestFrames(t *testing.T) {
	for _, tc := range []struct {
		name          string
		width, height int
		keys          []string
	}{
		{"80x24", 80, 24, nil},
		{"60x24", 60, 24, nil},
		{"40x20", 40, 20, nil},
		{"120x30-container", 120, 30, nil},
		{"80x24-expanded", 80, 24, []string{"j", "j", "enter"}},
		{"80x24-help", 80, 24, []string{"?"}},
		{"80x24-filter", 80, 24, []string{"/", "c", "l", "a", "u", "d", "e", "enter"}},
		{"80x24-extend", 80, 24, []string{"j", "j", "e", "1", "h"}},
		{"80x12-scrolled", 80, 12, []string{"j", "j", "j", "j", "j"}},
		{"once", 80, 0, nil},
		{"120x24-degraded", 120, 24, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, src := newTestModel(t)
			if strings.HasSuffix(tc.name, "-degraded") {
				// Polling, the database down, rows spooled and some held in
				// memory (the disk refused them): degraded with two causes.
				h := &src.snap.Health
				h.Source, h.Status, h.Database, h.SpoolRows, h.SpoolHeld = "proc", "degraded", "down", 120, 7
				h.Degraded = []string{"database: connection refused", "spool: no space left on device"}
				m.SetSnapshot(src.snap)
			}
			press(m, tc.keys...)
			got := m.Frame(tc.width, tc.height)
			for i, l := range strings.Split(got, "\n") {
				if w := len([]rune(l)); w > tc.width {
					t.Errorf("line %d is %d wide: %q", i+1, w, l)
				}
			}
			if n := strings.Count(got, "\n") + 1; tc.height > 0 && n != tc.height {
				t.Errorf("%d lines, want %d", n, tc.height)
			}
			golden(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./internal/top -run TestFrames -update writes it)", err)
	}
	if string(want) != got+"\n" {
		t.Errorf("frame differs from %s (-update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStreamReconnect: an ended event stream shows in the status line
// with its retry; once open again, the kills read since join Last kills
// (those seen already once) and the status line says so.
func TestStreamReconnect(t *testing.T) {
	m, _ := newTestModel(t)
	before := len(m.kills)
	m.Update(streamMsg{err: errors.New("the daemon ended the event stream"), retry: 2 * time.Second})
	if !strings.Contains(m.status, "reconnecting in 2s") || !strings.Contains(m.Frame(80, 24), "reconnecting in 2s") {
		t.Fatalf("stream ended: status %q", m.status)
	}
	seen := m.kills[0]
	m.Update(streamUpMsg{{At: at(-time.Second), PID: 4100, Comm: "claude", Reason: "memory", Outcome: "terminated"}, seen})
	if len(m.kills) != before+1 || m.kills[0].PID != 4100 {
		t.Errorf("kills after reconnecting: %+v", m.kills)
	}
	if m.status != "event stream reconnected" {
		t.Errorf("status after reconnecting: %q", m.status)
	}
	// The first open (no stream ended before) leaves the status alone.
	m.status = "sorted by MEM"
	m.Update(streamUpMsg(nil))
	if m.status != "sorted by MEM" {
		t.Errorf("first open changed the status: %q", m.status)
	}
}
