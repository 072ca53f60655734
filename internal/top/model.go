package top

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
)

// Refresh is how often the model reads a snapshot (and redraws the
// countdowns).
const Refresh = time.Second

// maxKills is how many kills "Last kills" keeps.
const maxKills = 50

// sortKey is the sessions' order.
type sortKey int

const (
	sortLeft sortKey = iota // soonest deadline first (default)
	sortMem                 // most memory first
	sortCPU                 // most CPU first
	sortAge                 // oldest first
	nSorts
)

func (s sortKey) String() string { return [...]string{"LEFT", "MEM", "CPU%", "AGE"}[s] }

// mode is what the keys do now.
type mode int

const (
	modeNormal  mode = iota
	modeFilter       // typing a filter
	modeExtend       // typing an extend's duration
	modeConfirm      // kill: y or anything else
	modeHelp         // the keys
)

// defaultExtend is what e offers.
const defaultExtend = "30m"

// Model is top's state: the last snapshot, the kills seen, the selection,
// the expanded sessions, the filter, the sort, a prompt, the status line.
type Model struct {
	src   Source
	now   func() time.Time
	color bool

	snap    Snapshot
	fetched bool // a snapshot arrived
	err     error
	kills   []Kill // newest first

	rows     []api.AgentView // the sessions shown: filtered and sorted
	selPID   int32           // the selected row's PID (kept across refreshes)
	sel      int
	offset   int // first session row shown
	expanded map[int32]bool
	sortBy   sortKey
	filter   string
	mode     mode
	input    textinput.Model
	target   api.AgentView // the prompt's session (extend, kill)
	status   string
	width    int
	height   int
	quitting bool
	batch    bool // the frame being drawn is --once's: no selection
	fetching bool // a snapshot is being read
	// streamDown: the event stream ended and is being opened again.
	streamDown bool
}

// NewModel is a model reading src; now is the clock (time.Now).
func NewModel(src Source, now func() time.Time, color bool) *Model {
	in := textinput.New()
	in.Prompt = ""
	in.CharLimit = 64
	return &Model{src: src, now: now, color: color, expanded: map[int32]bool{}, input: in, width: 80, height: 24}
}

// Messages.
type (
	tickMsg time.Time
	snapMsg struct {
		snap Snapshot
		err  error
	}
	killMsg Kill
	// streamMsg: the event stream ended (or could not open); it is
	// opened again after retry.
	streamMsg struct {
		err   error
		retry time.Duration
	}
	// streamUpMsg: the event stream is open; the daemon's last kills
	// (GET /kills, newest first) read since.
	streamUpMsg []Kill
	actionMsg   struct {
		text string
		err  error
	}
)

// Init reads the first snapshot and starts the clock.
func (m *Model) Init() tea.Cmd { return tea.Batch(m.fetch(), tick()) }

func tick() tea.Cmd { return tea.Tick(Refresh, func(t time.Time) tea.Msg { return tickMsg(t) }) }

// fetch reads a snapshot, with the members of the expanded sessions.
func (m *Model) fetch() tea.Cmd {
	var members []int32
	for pid := range m.expanded {
		members = append(members, pid)
	}
	slices.Sort(members)
	m.fetching = true
	src := m.src
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := src.Snapshot(ctx, members)
		return snapMsg{s, err}
	}
}

// Update is the model's step.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		if m.fetching {
			return m, tick() // the last one is not answered yet: never two at once
		}
		return m, tea.Batch(m.fetch(), tick())
	case snapMsg:
		m.fetching = false
		m.err = msg.err
		if msg.err == nil {
			m.snap, m.fetched = msg.snap, true
			m.rebuild()
		}
	case killMsg:
		m.AddKill(Kill(msg))
	case streamMsg:
		m.streamDown = true
		m.status = fmt.Sprintf("event stream: %v; reconnecting in %s (Last kills not live meanwhile)", msg.err, msg.retry)
	case streamUpMsg:
		m.setKills(msg)
		if m.streamDown {
			m.streamDown = false
			m.status = "event stream reconnected"
		}
	case actionMsg:
		if msg.err != nil {
			m.status = msg.err.Error()
		} else {
			m.status = msg.text
		}
		return m, m.fetch()
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// AddKill puts a kill at the top of "Last kills".
func (m *Model) AddKill(k Kill) {
	for _, o := range m.kills {
		if o.PID == k.PID && o.At.Equal(k.At) && o.Reason == k.Reason {
			return // from GET /kills and the stream both
		}
	}
	m.kills = append([]Kill{k}, m.kills...)
	if len(m.kills) > maxKills {
		m.kills = m.kills[:maxKills]
	}
}

func (m *Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	// Keys typed faster than they are read arrive as one message ("/123"):
	// outside a prompt each is a key of its own.
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 && !k.Paste && m.mode != modeFilter && m.mode != modeExtend {
		var cmds []tea.Cmd
		for _, r := range k.Runes {
			_, cmd := m.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: k.Alt})
			cmds = append(cmds, cmd)
		}
		return m, tea.Batch(cmds...)
	}
	if k.Type == tea.KeyCtrlC {
		m.quitting = true
		return m, tea.Quit
	}
	switch m.mode {
	case modeHelp:
		m.mode = modeNormal
		return m, nil
	case modeFilter:
		switch k.Type {
		case tea.KeyEnter:
			m.filter, m.mode = strings.TrimSpace(m.input.Value()), modeNormal
			m.rebuild()
			return m, nil
		case tea.KeyEsc:
			m.filter, m.mode = "", modeNormal
			m.rebuild()
			return m, nil
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(k)
		return m, cmd
	case modeExtend:
		switch k.Type {
		case tea.KeyEnter:
			m.mode = modeNormal
			d := strings.TrimSpace(m.input.Value())
			if d == "" {
				d = defaultExtend
			}
			if _, err := control.ParseExtend(d); err != nil {
				m.status = "extend: " + err.Error()
				return m, nil
			}
			return m, m.act(control.Request{Cmd: control.CmdExtend, Duration: d}, m.target)
		case tea.KeyEsc:
			m.mode, m.status = modeNormal, "extend cancelled"
			return m, nil
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(k)
		return m, cmd
	case modeConfirm:
		m.mode = modeNormal
		if k.String() == "y" || k.String() == "Y" {
			return m, m.act(control.Request{Cmd: control.CmdKill}, m.target)
		}
		m.status = "kill cancelled"
		return m, nil
	}
	switch k.String() {
	case "q":
		m.quitting = true
		return m, tea.Quit
	case "?":
		m.mode = modeHelp
	case "up", "k":
		m.move(-1)
	case "down", "j":
		m.move(1)
	case "pgup":
		m.move(-m.tableRows())
	case "pgdown":
		m.move(m.tableRows())
	case "home", "g":
		m.move(-len(m.rows))
	case "end", "G":
		m.move(len(m.rows))
	case "enter":
		if r, ok := m.selected(); ok && r.SessionPID == r.PID {
			if m.expanded[r.PID] {
				delete(m.expanded, r.PID)
			} else if len(m.expanded) < api.MaxMemberSessions {
				m.expanded[r.PID] = true
				return m, m.fetch()
			} else {
				m.status = fmt.Sprintf("at most %d sessions expanded at once", api.MaxMemberSessions)
			}
		}
	case "/":
		m.mode = modeFilter
		m.input.SetValue(m.filter)
		m.input.Placeholder = ""
		m.input.CursorEnd()
		return m, m.input.Focus()
	case "esc":
		if m.filter != "" {
			m.filter = ""
			m.rebuild()
		}
	case "s":
		m.sortBy = (m.sortBy + 1) % nSorts
		m.status = "sorted by " + m.sortBy.String()
		m.rebuild()
	case "e":
		if r, ok := m.selected(); ok {
			m.target, m.mode = r, modeExtend
			m.input.SetValue("")
			m.input.Placeholder = defaultExtend
			return m, m.input.Focus()
		}
	case "K":
		if r, ok := m.selected(); ok {
			cmd := control.CmdKeep
			if kept(r) {
				cmd = control.CmdUnkeep
			}
			return m, m.act(control.Request{Cmd: cmd}, r)
		}
	case "x":
		if r, ok := m.selected(); ok {
			m.target, m.mode = r, modeConfirm
		}
	}
	return m, nil
}

// act sends req for the session of row r, named by PID@START: an agent
// that exited is named by its first leftover, else (no leftover queued)
// by a live member of the expanded session — a kept one for unkeep.
func (m *Model) act(req control.Request, r api.AgentView) tea.Cmd {
	req.PID, req.Start = r.PID, r.StartedAt.Format(time.RFC3339Nano)
	if r.ExitedAt != nil {
		switch i := slices.IndexFunc(r.MemberList, func(mv api.MemberView) bool {
			return mv.Kept || req.Cmd != control.CmdUnkeep
		}); {
		case len(r.Leftovers) > 0:
			req.PID, req.Start = r.Leftovers[0].PID, r.Leftovers[0].StartedAt.Format(time.RFC3339Nano)
		case i >= 0:
			req.PID, req.Start = r.MemberList[i].PID, r.MemberList[i].StartedAt.Format(time.RFC3339Nano)
		default:
			m.status = fmt.Sprintf("%s: agent %d exited; expand the session (enter) to name a member", req.Cmd, r.PID)
			return nil
		}
	}
	src := m.src
	m.status = fmt.Sprintf("%s %d...", req.Cmd, req.PID)
	return func() tea.Msg {
		text, err := src.Control(context.Background(), req)
		return actionMsg{text, err}
	}
}

func (m *Model) selected() (api.AgentView, bool) {
	if m.sel < 0 || m.sel >= len(m.rows) {
		return api.AgentView{}, false
	}
	return m.rows[m.sel], true
}

func (m *Model) move(n int) {
	if len(m.rows) == 0 {
		return
	}
	m.sel = min(max(m.sel+n, 0), len(m.rows)-1)
	m.selPID = m.rows[m.sel].PID
}

// rebuild filters and sorts the snapshot's sessions and finds the
// selected one again.
func (m *Model) rebuild() {
	now := m.now()
	m.rows = m.rows[:0]
	f := strings.ToLower(m.filter)
	for _, a := range m.snap.Agents {
		if f == "" || matches(a, f) {
			m.rows = append(m.rows, a)
		}
	}
	sortRows(m.rows, m.sortBy, now)
	m.sel = 0
	for i, r := range m.rows {
		if r.PID == m.selPID {
			m.sel = i
			break
		}
	}
	if len(m.rows) > 0 {
		m.selPID = m.rows[m.sel].PID
	}
	// Expanded sessions that left are forgotten.
	for pid := range m.expanded {
		if !slices.ContainsFunc(m.snap.Agents, func(a api.AgentView) bool { return a.PID == pid }) {
			delete(m.expanded, pid)
		}
	}
}

// matches: a filter of digits is a PID, the session's or one of its
// members' (listed when expanded) or leftovers', exactly (/1000 never
// shows 10001); any other filter (lower case) is in the command or the
// container or pod ID.
func matches(a api.AgentView, f string) bool {
	if pid, err := strconv.ParseInt(f, 10, 32); err == nil && strings.Trim(f, "0123456789") == "" {
		p := int32(pid)
		return a.PID == p ||
			slices.ContainsFunc(a.MemberList, func(mv api.MemberView) bool { return mv.PID == p }) ||
			slices.ContainsFunc(a.Leftovers, func(l api.LeftoverView) bool { return l.PID == p })
	}
	for _, s := range []string{a.Comm, a.Cmdline, a.ContainerID, a.PodUID} {
		if s != "" && strings.Contains(strings.ToLower(s), f) {
			return true
		}
	}
	return false
}

func sortRows(rows []api.AgentView, by sortKey, now time.Time) {
	slices.SortStableFunc(rows, func(a, b api.AgentView) int {
		switch by {
		case sortMem:
			return cmpDesc(mem(a), mem(b))
		case sortCPU:
			return cmpDesc(cpu(a), cpu(b))
		case sortAge:
			return a.StartedAt.Compare(b.StartedAt)
		}
		la, oka := leftAt(a)
		lb, okb := leftAt(b)
		switch {
		case oka && okb:
			return la.Compare(lb)
		case oka:
			return -1
		case okb:
			return 1
		}
		return 0
	})
}

func cmpDesc[T int64 | float64](a, b T) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func mem(a api.AgentView) int64 {
	if f := a.SessionFigures; f != nil {
		return f.MemoryBytes + f.KeptMemoryBytes
	}
	return -1
}

func cpu(a api.AgentView) float64 {
	if f := a.SessionFigures; f != nil {
		return f.CPUPercent
	}
	return -1
}

// leftAt is when the row's countdown ends: its deadline, its leftovers'
// kill, its next retry; false when it has none (kept, leftovers kept,
// being killed).
func leftAt(a api.AgentView) (time.Time, bool) {
	if a.State == api.StateRetrying && a.NextAttempt != nil {
		return *a.NextAttempt, true
	}
	return a.Deadline, !a.Deadline.IsZero()
}

// kept: the session is root-kept (its agent, or every member left, is
// kept by --keep or a control-socket keep: exempt, no deadline). A
// session that is merely not killed — leftovers under --leftovers keep or
// REAPER_KEEP=1 — is not: K keeps it rather than unkeeping it.
func kept(a api.AgentView) bool {
	return a.Deadline.IsZero() && a.SessionFigures != nil && a.SessionFigures.Exempt
}

// killing: the daemon is killing the session now (queued to be killed now
// or being reaped, at its latest sample).
func killing(a api.AgentView) bool {
	return a.SessionFigures != nil && a.SessionFigures.Killing
}

// state is the STATE column.
func state(a api.AgentView, maxAge time.Duration, now time.Time) string {
	switch {
	case a.State == api.StateRetrying:
		return fmt.Sprintf("retrying (%d)", a.Attempt)
	case killing(a):
		return "being killed"
	case a.ExitedAt != nil && !a.Deadline.IsZero():
		return "leftovers in " + short(a.Deadline.Sub(now))
	case kept(a):
		return "kept"
	case a.Deadline.IsZero() && a.ExitedAt != nil:
		// No leftover queued: --leftovers keep, or each one left is
		// REAPER_KEEP=1 (or below a kept one).
		return "leftovers kept"
	case a.Deadline.IsZero():
		return "no deadline"
	case maxAge > 0 && a.Deadline.Sub(a.StartedAt) > maxAge+time.Second:
		return "extended"
	}
	return "running"
}

// tableRows is about how many session rows a page holds.
func (m *Model) tableRows() int { return max(m.height-12, 1) }
