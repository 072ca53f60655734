package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needTmux: the top test drives the real binary in a real terminal, tmux's.
func needTmux(t testing.TB) {
	t.Helper()
	needTool(t, "tmux", "")
}

// terminal is a tmux server of the test's own (its own socket, in the
// test's temporary directory: no other tmux is touched) with one window
// running a command.
type terminal struct {
	sock string
}

// startTerminal runs shell command cmd in a width × height tmux window.
func startTerminal(t testing.TB, width, height int, cmd string) *terminal {
	t.Helper()
	term := &terminal{sock: filepath.Join(t.TempDir(), "tmux.sock")}
	term.tmux(t, "new-session", "-d", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height), "sh", "-c", cmd)
	t.Cleanup(func() { exec.Command("tmux", "-S", term.sock, "kill-server").Run() })
	return term
}

func (term *terminal) tmux(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", term.sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keys types keys (tmux key names: Enter, Escape, or literal text).
func (term *terminal) keys(t testing.TB, keys ...string) {
	t.Helper()
	term.tmux(t, append([]string{"send-keys", "-t", "0"}, keys...)...)
}

// screen is what the window shows now.
func (term *terminal) screen(t testing.TB) string {
	t.Helper()
	return term.tmux(t, "capture-pane", "-p", "-t", "0")
}

// waitScreen waits until the window shows what ok wants, and returns it.
func (term *terminal) waitScreen(t testing.TB, timeout time.Duration, what string, ok func(string) bool) string {
	t.Helper()
	var s string
	end := time.Now().Add(timeout)
	for {
		s = term.screen(t)
		if ok(s) {
			return s
		}
		if time.Now().After(end) {
			t.Fatalf("not within %s: the screen showing %s; it shows:\n%s", timeout, what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childOf is the PID of the one child of a fake agent started with
// -children 1: the second "pid" line (the agent prints its own first).
// It is killed at cleanup (through a pidfd) if nothing killed it before.
func childOf(t testing.TB, a *agent) int {
	t.Helper()
	a.waitLine(t, "pid", 10*time.Second)
	child, _ := strconv.Atoi(strings.Fields(a.waitLine(t, "pid", 10*time.Second))[1])
	pidfdOf(t, child)
	return child
}

// rowOf is the sessions table's line of pid on screen ("" if none).
func rowOf(screen string, pid int) string {
	re := regexp.MustCompile(`(?m)^[> ]\s*` + strconv.Itoa(pid) + ` .*$`)
	return re.FindString(screen)
}

// killRowOf is pid's line under "Last kills" ("" if none).
func killRowOf(screen string, pid int) string {
	_, kills, ok := strings.Cut(screen, "Last kills")
	if !ok {
		return ""
	}
	re := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\s+` + strconv.Itoa(pid) + ` .*$`)
	return re.FindString(kills)
}

// supervisor top in a real terminal against a real daemon and real
// agents: the agents appear with their countdowns; enter shows a session's
// members; / and a PID filters to it; x and y kill it (its kill row says
// manual); e, 1h and enter keep another alive past its old deadline; a
// kill at max age appears under "Last kills" with no key pressed; q exits
// 0 and gives the terminal back.
func TestIntegrationTop(t *testing.T) {
	if ranApart(t, needTmux) {
		return
	}
	sock := ctlSocket(t)
	const maxAge = 60 * time.Second
	d := startDaemon(t, "--max-age", maxAge.String(), "--control-socket", sock)
	// Started in this order: the extended one's old deadline comes before
	// the one left to its max age.
	extended := startAgent(t, "claude", "-children", "1")
	aged := startAgent(t, "claude")
	killed := startAgent(t, "claude")
	for _, a := range []*agent{extended, aged, killed} {
		d.waitTracked(t, a.pid)
	}
	child := childOf(t, extended)

	term := startTerminal(t, 100, 30, fmt.Sprintf("%s top --api-socket %s --control-socket %s; echo top-exit=$?; exec cat",
		supervisorBin, d.api, sock))
	const bound = 30 * time.Second
	countdown := regexp.MustCompile(`\s\d+s\s.*\srunning$`)
	term.waitScreen(t, bound, "the three agents with their countdowns", func(s string) bool {
		for _, a := range []*agent{extended, aged, killed} {
			if !countdown.MatchString(rowOf(s, a.pid)) {
				return false
			}
		}
		return strings.Contains(s, "Sessions 3")
	})

	// / and the PID: that session alone; enter: its members.
	term.keys(t, "/", strconv.Itoa(extended.pid), "Enter")
	term.waitScreen(t, bound, "the filter to "+strconv.Itoa(extended.pid), func(s string) bool {
		return strings.Contains(s, "Sessions 1 of 3") && rowOf(s, extended.pid) != "" && rowOf(s, aged.pid) == ""
	})
	term.keys(t, "Enter")
	term.waitScreen(t, bound, "the session's members", func(s string) bool {
		return regexp.MustCompile(`└─ ` + strconv.Itoa(child) + ` `).MatchString(s)
	})
	before := d.agentsFor(t, extended.pid)[0].Deadline
	term.keys(t, "e")
	term.waitScreen(t, bound, "the extend prompt", func(s string) bool { return strings.Contains(s, "by: 30m") })
	term.keys(t, "1h", "Enter")
	term.waitScreen(t, bound, "the session extended", func(s string) bool {
		return strings.Contains(rowOf(s, extended.pid), "extended")
	})
	if after := d.agentsFor(t, extended.pid)[0].Deadline; after.Sub(before) < time.Hour-time.Second {
		t.Errorf("deadline %s after e 1h, was %s", after, before)
	}

	// Escape clears the filter; / and the other PID; x, y.
	term.keys(t, "Escape")
	term.waitScreen(t, bound, "the filter cleared", func(s string) bool { return strings.Contains(s, "Sessions 3 ") })
	term.keys(t, "/", strconv.Itoa(killed.pid), "Enter")
	term.waitScreen(t, bound, "the filter to "+strconv.Itoa(killed.pid), func(s string) bool {
		return strings.Contains(s, "Sessions 1 of 3") && rowOf(s, killed.pid) != ""
	})
	term.keys(t, "x")
	term.waitScreen(t, bound, "the kill's confirmation", func(s string) bool {
		return strings.Contains(s, fmt.Sprintf("kill session %d (claude) now?", killed.pid))
	})
	term.keys(t, "y")
	s := term.waitScreen(t, bound, "the manual kill under Last kills", func(s string) bool { return killRowOf(s, killed.pid) != "" })
	if row := killRowOf(s, killed.pid); !strings.Contains(row, " manual ") {
		t.Errorf("kill row %q: want reason manual", row)
	}
	// The daemon's own kill record says so too.
	if m := d.waitLog(t, bound, killOf(killed.pid)); m["reason"] != "manual" {
		t.Errorf("the daemon's kill record of %d: reason %v, want manual", killed.pid, m["reason"])
	}
	killed.waitExit(t, bound)
	term.keys(t, "Escape")

	// No key from here: the aged agent is killed at its max age and its
	// row arrives from the event stream.
	m := d.waitLog(t, maxAge+bound, killOf(aged.pid))
	s = term.waitScreen(t, bound, "the max-age kill under Last kills", func(s string) bool { return killRowOf(s, aged.pid) != "" })
	if row := killRowOf(s, aged.pid); !strings.Contains(row, " max_age ") {
		t.Errorf("kill row %q: want reason max_age (logged %v)", row, m["reason"])
	}
	// The extended agent started before the aged one: its old deadline
	// has passed, and it lives.
	if !extended.alive() {
		t.Error("the extended agent did not outlive its old deadline")
	}
	if !strings.Contains(rowOf(s, extended.pid), "extended") {
		t.Errorf("extended row: %q", rowOf(s, extended.pid))
	}

	term.keys(t, "q")
	s = term.waitScreen(t, bound, "top's exit", func(s string) bool { return strings.Contains(s, "top-exit=") })
	if !strings.Contains(s, "top-exit=0") || strings.Contains(s, "Last kills") {
		t.Errorf("after q (want exit 0 and the terminal given back):\n%s", s)
	}
	if alt := strings.TrimSpace(term.tmux(t, "display-message", "-p", "-t", "0", "#{alternate_on}")); alt != "0" {
		t.Errorf("alternate screen still on after q: %q", alt)
	}
}

// supervisor top --once through a pipe prints one plain frame and exits 0;
// --json prints one document with the sessions, their members and
// figures; without a daemon it says so and exits 1.
func TestIntegrationTopBatch(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", "1h", "--resource-interval", "1s", "--control-socket", sock)
	a := startAgent(t, "claude", "-children", "1")
	d.waitTracked(t, a.pid)
	child := childOf(t, a)
	gone := startAgent(t, "claude")
	d.waitTracked(t, gone.pid)
	mustCtl(t, sock, "kill", strconv.Itoa(gone.pid))
	d.waitLog(t, 30*time.Second, killOf(gone.pid))
	waitFor(t, 30*time.Second, func() bool {
		var rows []struct {
			PID int32 `json:"pid"`
		}
		d.get(t, "/kills", &rows)
		return len(rows) == 1 && int(rows[0].PID) == gone.pid
	}, "GET /kills listing the kill of %d", gone.pid)

	for _, args := range [][]string{{"top", "--once"}, {"top"}} { // a pipe is batch mode by itself
		// The frame's width is COLUMNS through a pipe: 80 here, whatever
		// the test's own environment says.
		out, errs, code := runCLIEnv(t, []string{"COLUMNS=80"}, append(args, "--api-socket", d.api)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("%v: escape sequences in a pipe:\n%q", args, out)
		}
		if !strings.HasPrefix(out, "supervisor top @ ") || !regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\s+`+strconv.Itoa(gone.pid)+` claude\s+manual `).MatchString(out) ||
			!regexp.MustCompile(`(?m)^\s+`+strconv.Itoa(a.pid)+` .*\s\d+m\d\ds\s.*running$`).MatchString(out) {
			t.Errorf("%v: frame:\n%s", args, out)
		}
		for i, l := range strings.Split(out, "\n") {
			if n := len([]rune(l)); n > 80 {
				t.Errorf("%v: line %d is %d wide", args, i+1, n)
			}
		}
	}

	type member struct {
		PID         int32  `json:"pid"`
		PPID        int32  `json:"ppid"`
		Cmdline     string `json:"cmdline"`
		MemoryBytes *int64 `json:"memory_bytes"`
	}
	var doc struct {
		Health struct {
			Source string   `json:"source"`
			PSI    *float64 `json:"pressure_some_avg10"`
		} `json:"health"`
		Sessions []struct {
			PID         int32     `json:"pid"`
			Deadline    time.Time `json:"deadline"`
			MemoryBytes *int64    `json:"memory_bytes"`
			Members     []member  `json:"member_list"`
		} `json:"sessions"`
		Kills []struct {
			PID    int32  `json:"pid"`
			Reason string `json:"reason"`
		} `json:"recent_kills"`
	}
	// The sampler reads the members once a second: wait for the figures.
	waitFor(t, 30*time.Second, func() bool {
		out, errs, code := runCLI(t, "top", "--json", "--api-socket", d.api)
		if code != 0 {
			t.Fatalf("top --json: exit %d: %s", code, errs)
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("top --json: %v:\n%s", err, out)
		}
		for _, s := range doc.Sessions {
			if int(s.PID) == a.pid && s.MemoryBytes != nil && len(s.Members) == 2 && s.Members[1].MemoryBytes != nil {
				return true
			}
		}
		return false
	}, "top --json with the session's figures and its two members' memory")
	if doc.Health.Source == "" || len(doc.Kills) != 1 || int(doc.Kills[0].PID) != gone.pid || doc.Kills[0].Reason != "manual" {
		t.Errorf("--json health %+v, recent kills %+v: want the manual kill of %d", doc.Health, doc.Kills, gone.pid)
	}
	for _, s := range doc.Sessions {
		if int(s.PID) != a.pid {
			continue
		}
		if s.Members[0].PID != int32(a.pid) || int(s.Members[1].PID) != child || int(s.Members[1].PPID) != a.pid ||
			!strings.Contains(s.Members[1].Cmdline, "-children 0") || s.Deadline.IsZero() {
			t.Errorf("--json session: %+v", s)
		}
	}

	d.stop(t)
	if _, errs, code := runCLI(t, "top", "--once", "--api-socket", d.api); code != 1 || !strings.Contains(errs, "no daemon answers on "+d.api) {
		t.Errorf("without a daemon: exit %d %q", code, errs)
	}
}

// BenchmarkIntegrationTopCPU: supervisor top in a real terminal (tmux,
// 120×40) against a real daemon holding 1,000 sessions (an agent and a
// child each, the forker's sessions mode): top's CPU over a window (utime
// + stime from /proc/PID/stat), and the daemon's over a window without top
// and one with it, with the requests top made (its once-a-second
// snapshot: /healthz and /agents, and one /events stream).
func BenchmarkIntegrationTopCPU(b *testing.B) {
	needRoot(b)
	needTmux(b)
	n := scale(30, 1000, 1000)
	window := scale(1*time.Second, 30*time.Second, 60*time.Second)
	for b.Loop() {
		startSessions(b, "top-agent", n, 1)
		sock := ctlSocket(b)
		d := startDaemon(b, "--max-age", "1h", "--agent", "top-agent", "--log-level", "info", "--summary-interval", "1h",
			"--control-socket", sock)
		waitHealth(b, d, 60*time.Second, func(h healthView) bool { return h.Agents == n })
		dpid := d.cmd.Process.Pid
		time.Sleep(time.Second) // settle after start-up before measuring
		d0, _ := procCPU(dpid)
		time.Sleep(window)
		d1, _ := procCPU(dpid)

		term := startTerminal(b, 120, 40, fmt.Sprintf("exec %s top --api-socket %s", supervisorBin, d.api))
		term.waitScreen(b, 60*time.Second, fmt.Sprintf("%d sessions", n), func(s string) bool {
			return strings.Contains(s, fmt.Sprintf("Sessions %d ", n))
		})
		pid, err := strconv.Atoi(strings.TrimSpace(term.tmux(b, "display-message", "-p", "-t", "0", "#{pane_pid}")))
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second)
		t0, _ := procCPU(pid)
		d2, _ := procCPU(dpid)
		time.Sleep(window)
		t1, rss := procCPU(pid)
		d3, _ := procCPU(dpid)
		if s := term.screen(b); !strings.Contains(s, fmt.Sprintf("Sessions %d ", n)) {
			b.Fatalf("top no longer shows the sessions:\n%s", s)
		}
		// A kill's row: from the kill's record (the daemon's kill line,
		// logged just after the record is published on the stream) to the
		// screen showing it, polled as fast as tmux answers.
		var agents []struct {
			PID int `json:"pid"`
		}
		d.get(b, "/agents", &agents)
		victim := agents[0].PID
		mustCtl(b, sock, "kill", strconv.Itoa(victim))
		var shown time.Time
		for end := time.Now().Add(30 * time.Second); ; {
			s := term.screen(b)
			shown = time.Now() // the screen showed it by now
			if killRowOf(s, victim) != "" {
				break
			}
			if time.Now().After(end) {
				b.Fatalf("the kill of %d never showed:\n%s", victim, s)
			}
		}
		m := d.waitLog(b, 10*time.Second, killOf(victim))
		logged, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
		if err != nil {
			b.Fatalf("kill line time %v: %v", m["time"], err)
		}
		toScreen := float64(shown.Sub(logged)) / 1e6
		topPct := 100 * (t1 - t0) / window.Seconds()
		record(b, "top_cpu", map[string]any{
			"sessions":               n,
			"window_s":               window.Seconds(),
			"top_cpu_pct":            topPct,
			"top_rss_mb":             float64(rss) / (1 << 20),
			"daemon_cpu_pct_without": 100 * (d1 - d0) / window.Seconds(),
			"daemon_cpu_pct_with":    100 * (d3 - d2) / window.Seconds(),
			"kill_to_screen_ms":      toScreen,
		})
		b.ReportMetric(topPct, "top-cpu-%")
		b.ReportMetric(toScreen, "kill-to-screen-ms")
		b.ReportMetric(100*(d3-d2)/window.Seconds()-100*(d1-d0)/window.Seconds(), "daemon-added-cpu-%")
	}
}
