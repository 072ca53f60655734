package top

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/termtext"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// The frame: two header lines, the sessions (a title, the column names,
// one row per session and the members of the expanded ones), "Last kills"
// and the status line. Every line fits the width; columns are dropped,
// least needed first, when it is narrow.

// column is one column of the sessions table.
type column struct {
	name  string
	width int
	right bool
	drop  int // dropped in this order (1 first) when the width is short; 0 never
	cell  func(a api.AgentView, c *cellCtx) string
}

// cellCtx is what the cells are computed with.
type cellCtx struct {
	now    time.Time
	maxAge time.Duration
}

// minCommand is the narrowest COMMAND column before others are dropped.
const minCommand = 16

var columns = []column{
	{name: "PID", width: 7, right: true, cell: func(a api.AgentView, _ *cellCtx) string { return strconv.Itoa(int(a.PID)) }},
	{name: "COMMAND", cell: func(a api.AgentView, _ *cellCtx) string { return command(a) }},
	{name: "CONTAINER", width: 12, drop: 4, cell: func(a api.AgentView, _ *cellCtx) string { return container(a.ContainerID, a.PodUID) }},
	{name: "AGE", width: 6, right: true, drop: 2, cell: func(a api.AgentView, c *cellCtx) string { return short(c.now.Sub(a.StartedAt)) }},
	{name: "LEFT", width: 7, right: true, cell: func(a api.AgentView, c *cellCtx) string {
		if t, ok := leftAt(a); ok {
			return short(t.Sub(c.now))
		}
		return "-"
	}},
	{name: "MEM", width: 6, right: true, drop: 5, cell: func(a api.AgentView, _ *cellCtx) string {
		if f := a.SessionFigures; f != nil {
			return bytesShort(f.MemoryBytes + f.KeptMemoryBytes)
		}
		return "-"
	}},
	{name: "CPU%", width: 5, right: true, drop: 3, cell: func(a api.AgentView, _ *cellCtx) string {
		if f := a.SessionFigures; f != nil {
			return strconv.FormatFloat(f.CPUPercent, 'f', 0, 64)
		}
		return "-"
	}},
	{name: "PROCS", width: 5, right: true, drop: 1, cell: func(a api.AgentView, _ *cellCtx) string {
		if f := a.SessionFigures; f != nil {
			return strconv.Itoa(f.Procs + f.KeptProcs)
		}
		if a.Members > 0 {
			return strconv.Itoa(a.Members)
		}
		return "-"
	}},
	{name: "STATE", width: 16, cell: func(a api.AgentView, c *cellCtx) string { return state(a, c.maxAge, c.now) }},
}

// layout picks the columns that fit width and the COMMAND column's width.
func layout(width int, withContainer bool) ([]column, int) {
	cols := make([]column, 0, len(columns))
	for _, c := range columns {
		if c.name == "CONTAINER" && !withContainer {
			continue
		}
		cols = append(cols, c)
	}
	for {
		used := 1 // the selection mark
		for i, c := range cols {
			used += c.width
			if i > 0 {
				used++
			}
		}
		cmd := width - used
		if cmd >= minCommand {
			return cols, cmd
		}
		worst, at := 0, -1
		for i, c := range cols {
			if c.drop > worst {
				worst, at = c.drop, i
			}
		}
		if at < 0 {
			return cols, max(cmd, 4)
		}
		// Lowest drop number goes first.
		for i, c := range cols {
			if c.drop > 0 && c.drop < cols[at].drop {
				at = i
			}
		}
		cols = append(cols[:at], cols[at+1:]...)
	}
}

// styles are the frame's; all plain without colour.
type styles struct {
	title, head, sel, dim, warn lipgloss.Style
}

func newStyles(color bool) styles {
	if !color {
		p := lipgloss.NewStyle()
		return styles{p, p, p, p, p}
	}
	return styles{
		title: lipgloss.NewStyle().Bold(true),
		head:  lipgloss.NewStyle().Bold(true).Underline(true),
		sel:   lipgloss.NewStyle().Reverse(true),
		dim:   lipgloss.NewStyle().Faint(true),
		warn:  lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
	}
}

// View is the frame at the model's size.
func (m *Model) View() string {
	if m.quitting {
		return ""
	}
	return m.Frame(m.width, m.height)
}

// Frame renders the model at width × height; height 0 is every row and no
// status line (--once).
func (m *Model) Frame(width, height int) string {
	if width < 20 {
		width = 20
	}
	st := newStyles(m.color)
	now := m.now()
	var out []string
	add := func(s string, style lipgloss.Style) {
		out = append(out, paint(style, strings.TrimRight(fit(s, width), " ")))
	}
	m.batch = height == 0

	add(m.header1(), st.title)
	add(m.header2(), lipgloss.NewStyle())

	// The tail: Last kills and the status line.
	nk := len(m.kills)
	if height > 0 {
		nk = min(nk, 5)
		if height < 18 {
			nk = min(nk, 2)
		}
	}
	tail := 2 + max(nk, 1)
	if height > 0 {
		tail++ // the status line
	}

	if m.mode == modeHelp && height > 0 {
		for _, l := range helpLines {
			add(l, lipgloss.NewStyle())
		}
	} else {
		m.table(&out, width, height, tail, now, st)
	}
	if height > 0 {
		for len(out) < height-tail {
			out = append(out, "")
		}
	}
	add("Last kills", st.title)
	add(fmt.Sprintf("%-8s %7s %-15s %-9s %9s  %s", "TIME", "PID", "COMMAND", "REASON", "LATE", "OUTCOME"), st.head)
	if len(m.kills) == 0 {
		add("none yet", st.dim)
	}
	loc := now.Location()
	for _, k := range m.kills[:nk] {
		add(fmt.Sprintf("%-8s %7d %-15s %-9s %9s  %s", k.At.In(loc).Format("15:04:05"), k.PID, clipTo(printable(k.Comm), 15),
			clipTo(printable(k.Reason), 9), fmt.Sprintf("%.1fms", k.LatenessMS), printable(k.Outcome)), lipgloss.NewStyle())
	}
	if height > 0 {
		s, style := m.statusLine(), lipgloss.NewStyle()
		if m.err != nil && m.mode == modeNormal {
			s, style = "error: "+m.err.Error(), st.warn
		}
		add(s, style)
		if len(out) > height {
			out = append(out[:height-1], out[len(out)-1])
		}
	}
	return strings.Join(out, "\n")
}

func (m *Model) header1() string {
	h := m.snap.Health
	if !m.fetched {
		return "supervisor top  waiting for the daemon..."
	}
	status := printable(h.Status)
	if n := len(h.Degraded); n > 0 {
		status = fmt.Sprintf("%s (%d cause%s)", status, n, map[bool]string{true: "s"}[n > 1])
	}
	s := fmt.Sprintf("supervisor top @ %s  %s  max age %s  %d sessions (%d procs)  %d leftovers",
		printable(h.Host), status, maxAgeShort(h.MaxAge), h.Sessions, h.Members, h.Leftovers)
	if h.DryRun {
		s += "  DRY RUN"
	}
	return s
}

func (m *Model) header2() string {
	h := m.snap.Health
	if !m.fetched {
		return ""
	}
	psi := "n/a"
	if h.PressureSomeAvg10 != nil {
		psi = fmt.Sprintf("%.2f%%", *h.PressureSomeAvg10)
	}
	db := "database " + printable(h.Database)
	var spool []string
	if h.Database == "none" || h.SpoolRows > 0 {
		spool = append(spool, fmt.Sprintf("%d spooled", h.SpoolRows))
	}
	if h.SpoolHeld > 0 { // the disk refused them: in memory only
		spool = append(spool, fmt.Sprintf("%d held in memory", h.SpoolHeld))
	}
	if len(spool) > 0 {
		db += " (" + strings.Join(spool, ", ") + ")"
	}
	s := fmt.Sprintf("%s  %.0f events/s  %d lost  PSI memory some avg10 %s  %s", sourceName(h.Source), h.Rate, h.EventsLost, psi, db)
	if h.Retrying > 0 {
		s += fmt.Sprintf("  %d kills retrying", h.Retrying)
	}
	return s
}

// sourceName is the event source in the words: netlink (the proc
// connector) or polling (/proc read each interval).
func sourceName(src string) string {
	if src == "proc" {
		return "polling"
	}
	return printable(src)
}

// table adds the sessions' title, column names, rows and expanded
// members, scrolled so that the selection shows, leaving tail lines.
func (m *Model) table(out *[]string, width, height, tail int, now time.Time, st styles) {
	withCtr := false
	for _, a := range m.rows {
		if a.ContainerID != "" || a.PodUID != "" {
			withCtr = true
			break
		}
	}
	cols, cmdW := layout(width, withCtr)
	title := fmt.Sprintf("Sessions %d", len(m.rows))
	if len(m.rows) != len(m.snap.Agents) {
		title = fmt.Sprintf("Sessions %d of %d", len(m.rows), len(m.snap.Agents))
	}
	title += "  sort " + m.sortBy.String()
	if m.filter != "" {
		title += "  filter " + strconv.Quote(m.filter) + " (esc clears)"
	}
	*out = append(*out, paint(st.title, fit(title, width)))
	var hb strings.Builder
	hb.WriteByte(' ')
	for i, c := range cols {
		name := c.name
		if (c.name == "LEFT" && m.sortBy == sortLeft) || (c.name == "MEM" && m.sortBy == sortMem) ||
			(c.name == "CPU%" && m.sortBy == sortCPU) || (c.name == "AGE" && m.sortBy == sortAge) {
			name = "*" + name
		}
		cell(&hb, i, c, cmdW, name)
	}
	*out = append(*out, paint(st.head, strings.TrimRight(fit(hb.String(), width), " ")))
	if len(m.rows) == 0 {
		msg := "no sessions tracked"
		if m.filter != "" {
			msg = "no session matches the filter"
		}
		if !m.fetched {
			msg = ""
		}
		*out = append(*out, paint(st.dim, fit(msg, width)))
		return
	}
	room := 1 << 30
	if height > 0 {
		room = max(height-len(*out)-tail, 1)
	}
	// Lines per session: its row and, expanded, its members.
	lines := func(i int) []string { return m.sessionLines(i, cols, cmdW, width, now, st) }
	// Scroll: the selection and its members show.
	if m.sel < m.offset {
		m.offset = m.sel
	}
	for {
		n := 0
		for i := m.offset; i <= m.sel && i < len(m.rows); i++ {
			n += len(lines(i))
		}
		if n <= room || m.offset >= m.sel {
			break
		}
		m.offset++
	}
	n := 0
	for i := m.offset; i < len(m.rows) && n < room; i++ {
		for _, l := range lines(i) {
			if n == room {
				break
			}
			*out = append(*out, l)
			n++
		}
	}
}

// sessionLines are session i's row and, expanded, its member tree.
func (m *Model) sessionLines(i int, cols []column, cmdW, width int, now time.Time, st styles) []string {
	a := m.rows[i]
	ctx := &cellCtx{now: now, maxAge: maxAgeOf(m.snap.Health.MaxAge)}
	var b strings.Builder
	if i == m.sel && m.fetched && !m.batch {
		b.WriteByte('>')
	} else {
		b.WriteByte(' ')
	}
	for j, c := range cols {
		cell(&b, j, c, cmdW, c.cell(a, ctx))
	}
	row := fit(b.String(), width)
	if i == m.sel && m.color {
		row = paint(st.sel, padTo(row, width))
	} else {
		row = strings.TrimRight(row, " ")
	}
	out := []string{row}
	if !m.expanded[a.PID] {
		return out
	}
	if len(a.MemberList) == 0 {
		return append(out, paint(st.dim, fit("    (members: reading...)", width)))
	}
	for _, l := range memberTree(a.MemberList) {
		memS := "-"
		if l.m.MemoryBytes != nil {
			memS = bytesShort(*l.m.MemoryBytes)
		}
		right := fmt.Sprintf(" %6s %-4s", memS, map[bool]string{true: "kept"}[l.m.Kept])
		cmd := printable(l.m.Cmdline)
		if cmd == "" {
			cmd = "[" + printable(l.m.Comm) + "]"
		}
		left := fmt.Sprintf("    %s%d %s", l.prefix, l.m.PID, cmd)
		lw := max(width-ansi.StringWidth(right), 8)
		out = append(out, paint(st.dim, strings.TrimRight(padTo(fit(left, lw), lw)+right, " ")))
	}
	return out
}

// treeLine is one member in the tree, with the lines drawn before it.
type treeLine struct {
	prefix string
	m      api.MemberView
}

// memberTree orders members as a tree by their parents (a member whose
// parent is no member is a root), in the members' order.
func memberTree(ms []api.MemberView) []treeLine {
	in := make(map[int32]bool, len(ms))
	for _, m := range ms {
		in[m.PID] = true
	}
	kids := map[int32][]api.MemberView{}
	var roots []api.MemberView
	for _, m := range ms {
		if m.PPID != 0 && in[m.PPID] && m.PPID != m.PID {
			kids[m.PPID] = append(kids[m.PPID], m)
		} else {
			roots = append(roots, m)
		}
	}
	var out []treeLine
	seen := map[int32]bool{}
	var walk func(list []api.MemberView, indent string)
	walk = func(list []api.MemberView, indent string) {
		for i, m := range list {
			if seen[m.PID] {
				continue
			}
			seen[m.PID] = true
			branch, next := "├─ ", "│  "
			if i == len(list)-1 {
				branch, next = "└─ ", "   "
			}
			out = append(out, treeLine{indent + branch, m})
			walk(kids[m.PID], indent+next)
		}
	}
	walk(roots, "")
	return out
}

func cell(b *strings.Builder, i int, c column, cmdW int, s string) {
	if i > 0 {
		b.WriteByte(' ')
	}
	w := c.width
	if c.name == "COMMAND" {
		w = cmdW
	}
	s = fit(s, w)
	pad := strings.Repeat(" ", max(w-ansi.StringWidth(s), 0))
	if c.right {
		b.WriteString(pad + s)
	} else {
		b.WriteString(s + pad)
	}
}

func (m *Model) statusLine() string {
	switch m.mode {
	case modeFilter:
		return "filter: " + m.input.View() + "  (enter applies, esc clears)"
	case modeExtend:
		return fmt.Sprintf("extend %d (%s) by: %s  (enter confirms, esc cancels)", m.target.PID, printable(m.target.Comm), m.input.View())
	case modeConfirm:
		return fmt.Sprintf("kill session %d (%s) now? y confirms, any other key cancels", m.target.PID, printable(m.target.Comm))
	case modeHelp:
		return "any key returns"
	}
	if m.status != "" {
		return m.status
	}
	return "? keys  enter expand  / filter  s sort  e extend  K keep  x kill  q quit"
}

var helpLines = []string{
	"Keys",
	"  up/down, j/k   move (pgup/pgdown, home/end)",
	"  enter          expand or fold the session's members",
	"  /              filter by PID, command, container (enter applies)",
	"  esc            clear the filter",
	"  s              cycle the sort: LEFT, MEM, CPU%, AGE",
	"  e              extend the session (a duration, default 30m)",
	"  K              keep or unkeep the session",
	"  x              kill the session now (y confirms)",
	"  ?              these keys",
	"  q, ctrl-c      quit",
	"Actions go over the control socket (root or --control-group).",
}

// command is a row's command: its command line, else its name.
func command(a api.AgentView) string {
	if a.Cmdline != "" {
		return printable(a.Cmdline)
	}
	return printable(a.Comm)
}

// container is a short container ID (12), else a short pod UID (8).
func container(id, pod string) string {
	switch {
	case id != "":
		return clipTo(id, 12)
	case pod != "":
		return "pod " + clipTo(pod, 8)
	}
	return ""
}

func maxAgeOf(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func maxAgeShort(s string) string {
	if d, err := time.ParseDuration(s); err == nil {
		return short(d)
	}
	return printable(s)
}

// fit cuts s to width cells, with … when cut.
func fit(s string, width int) string {
	if ansi.StringWidth(s) <= width {
		return s
	}
	if width <= 1 {
		return ansi.Truncate(s, width, "")
	}
	return ansi.Truncate(s, width, "…")
}

func padTo(s string, width int) string {
	return s + strings.Repeat(" ", max(width-ansi.StringWidth(s), 0))
}

func paint(st lipgloss.Style, s string) string {
	if s == "" {
		return s
	}
	return st.Render(s)
}

func clipTo(s string, n int) string { return termtext.Clip(s, n) }

// short prints a duration in at most 7 characters: 1h52m, 8m05s, 42s, 4.2s.
func short(d time.Duration) string { return termtext.Duration(d, 10*time.Second) }

func bytesShort(b int64) string { return termtext.Bytes(b) }

// printable escapes what a process chose and a terminal would obey
// (escape sequences, newlines): \x1b, \n.
func printable(s string) string { return termtext.Printable(s) }
