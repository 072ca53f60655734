package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventWriteTimeout is how long a write to an /events client may be stuck
// before the daemon drops it (docs/operations.md).
const eventWriteTimeout = 10 * time.Second

func eventTime(t *testing.T, m map[string]any, key string) time.Time {
	t.Helper()
	s, _ := m[key].(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s event: %s %q: %v", m["type"], key, s, err)
	}
	return tm
}

// checkKillEvent asserts a kill event is the record of a's kill at max
// age: terminated by SIGTERM, never early, on time.
func checkKillEvent(t *testing.T, m map[string]any, a *agent, comm string, age time.Duration) {
	t.Helper()
	started, deadline, signalled := eventTime(t, m, "started_at"), eventTime(t, m, "deadline"), eventTime(t, m, "signalled_at")
	if m["comm"] != comm || m["reason"] != "max_age" || m["outcome"] != "terminated" || m["final_signal"] != "TERM" ||
		m["dry_run"] != false || num(m["session_pid"]) != int64(a.pid) || m["exited_at"] == nil {
		t.Errorf("kill event of %d: %v", a.pid, m)
	}
	// Wall times convert boottime at slightly different moments: allow a
	// millisecond.
	if deadline.Sub(started) < age-time.Millisecond {
		t.Errorf("kill event of %d: deadline %s after start, want max age %s", a.pid, deadline.Sub(started), age)
	}
	late, _ := m["lateness_ms"].(float64)
	if late < 0 || late > 1000 || signalled.Before(deadline.Add(-time.Millisecond)) {
		t.Errorf("kill event of %d: lateness %.3f ms, signalled %s deadline %s: want on time, never early", a.pid, late, signalled, deadline)
	}
	// The agent's own view: never signalled before max age.
	if tt := a.termTime(t); tt < a.t0+int64(age) {
		t.Errorf("agent %d got SIGTERM %s after start, before max age %s", a.pid, time.Duration(tt-a.t0), age)
	}
}

// /events delivers an agent event for each agent found, then its kill
// record when it is killed, while the client streams.
func TestIntegrationEventsKills(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1s", "--agent", "evkill")
	s := openEvents(t, d, "")
	agents := map[int]*agent{}
	for range 3 {
		a := startAgent(t, "evkill")
		agents[a.pid] = a
	}
	found := map[int]map[string]any{}
	kills := map[int]map[string]any{}
	end := time.Now().Add(60 * time.Second)
	for len(kills) < len(agents) {
		m := s.next(t, time.Until(end))
		pid := int(num(m["pid"]))
		if agents[pid] == nil {
			continue // a snapshot, or nothing of ours
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("event %v: time: %v", m, err)
		}
		switch m["type"] {
		case "agent":
			if kills[pid] != nil {
				t.Errorf("agent event of %d after its kill event", pid)
			}
			found[pid] = m
		case "kill":
			if found[pid] == nil {
				t.Errorf("kill event of %d before any agent event", pid)
			}
			if kills[pid] != nil {
				t.Errorf("two kill events for %d", pid)
			}
			kills[pid] = m
		default:
			t.Errorf("unexpected event for agent %d: %v", pid, m)
		}
	}
	for pid, a := range agents {
		ag := found[pid]
		if ag["comm"] != "evkill" || ag["rule"] != "evkill" || num(ag["session_pid"]) != int64(pid) ||
			!strings.Contains(ag["cmdline"].(string), "evkill") {
			t.Errorf("agent event of %d: %v", pid, ag)
		}
		if got := eventTime(t, ag, "deadline").Sub(eventTime(t, ag, "started_at")); got < maxAge-time.Millisecond || got > maxAge+time.Millisecond {
			t.Errorf("agent event of %d: deadline %s after start, want %s", pid, got, maxAge)
		}
		a.waitExit(t, 10*time.Second)
		checkKillEvent(t, kills[pid], a, "evkill", maxAge)
	}
}

// dialStuck opens a connection to GET path on the API socket that asks
// for the smallest receive buffer and never reads: a client that stops
// reading (on a unix socket the daemon's send buffer, eventSndbuf, is
// what fills).
func dialStuck(t *testing.T, d *testDaemon, path string) net.Conn {
	t.Helper()
	dl := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := dl.Dial("unix", d.api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A client that never reads is dropped and counted, and kills stay on
// time; a client that reads gets every kill record, and only those
// (?types=kill). The per-client buffer is made small (--event-buffer, a
// test knob) so that a few dozen agents overflow it.
func TestIntegrationEventsSlowClientDropped(t *testing.T) {
	if ranApart(t) {
		return
	}
	const n, age = 40, 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s", "--agent", "evslow", "--event-buffer", "16")
	if got := metricValue(t, d, "supervisor_event_clients_dropped_total"); got != 0 {
		t.Fatalf("dropped %v before any client", got)
	}
	stuck := dialStuck(t, d, "/events")
	fast := openEvents(t, d, "?types=kill")
	waitClients(t, d, 2)
	// Each agent's events carry its command line: 4 KB of padding make the
	// agent and kill events of 40 agents about 320 KB, more than the stuck
	// connection's socket buffers and 16 events hold.
	pad := strings.Repeat("x", 4000)
	agents := map[int]*agent{}
	for range n {
		// One at a time, each found before the next starts: their kills
		// come apart as their starts did, so the reading client is never
		// a whole buffer behind, however slow the machine (started at
		// once, 40 kills in one burst outran its writer at a load of 24).
		a := startAgent(t, "evslow", pad)
		agents[a.pid] = a
		d.waitLog(t, time.Minute, func(m map[string]any) bool { return m["msg"] == "agent" && num(m["pid"]) == int64(a.pid) })
	}
	kills := map[int]map[string]any{}
	end := time.Now().Add(60 * time.Second)
	for len(kills) < n {
		m := fast.next(t, time.Until(end))
		if m["type"] != "kill" {
			t.Fatalf("?types=kill delivered %v", m)
		}
		if pid := int(num(m["pid"])); agents[pid] != nil {
			kills[pid] = m
		}
	}
	for pid, a := range agents {
		a.waitExit(t, 10*time.Second)
		checkKillEvent(t, kills[pid], a, "evslow", age)
	}
	if got := metricValue(t, d, "supervisor_event_clients_dropped_total"); got != 1 {
		t.Errorf("supervisor_event_clients_dropped_total %v, want the stuck client counted once", got)
	}
	if got := metricValue(t, d, "supervisor_event_clients"); got != 1 {
		t.Errorf("supervisor_event_clients %v, want the reading client only", got)
	}
	// The stuck client's handler gives up within the write timeout and
	// the connection ends: reading it now drains what was sent, then EOF.
	d.waitLog(t, eventWriteTimeout+20*time.Second, func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "event client dropped") })
	stuck.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.Copy(io.Discard, stuck)
	if err != nil {
		t.Errorf("the dropped client's connection did not end: %v after %d bytes", err, got)
	}
	t.Logf("the stuck client had %d bytes waiting when dropped", got)
}

// waitClients waits until n /events clients are subscribed.
func waitClients(t *testing.T, d *testDaemon, n float64) {
	t.Helper()
	waitMetric(t, d, "supervisor_event_clients", n)
}

// The filter, its errors, snapshots, `supervisor events` and the end of
// the stream when the daemon stops.
func TestIntegrationEventsCommand(t *testing.T) {
	if ranApart(t) {
		return
	}
	// No daemon: a clear message, exit 1.
	free := filepath.Join(t.TempDir(), "api.sock")
	_, errs, code := runCLI(t, "events", "--api-socket", free)
	if code != 1 || !strings.Contains(errs, "no daemon answers on "+free) {
		t.Errorf("events without a daemon: exit %d, %q", code, errs)
	}
	if _, errs, code := runCLI(t, "events", "--types", "kill,bogus"); code != 2 || !strings.Contains(errs, `"bogus"`) {
		t.Errorf("events --types kill,bogus: exit %d, %q", code, errs)
	}

	d := startDaemon(t, "--summary-interval", "1s", "--agent", "evcmd")
	resp, err := d.apiClient(10 * time.Second).Get(d.url("/events?types=kill,bogus"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"bogus"`) {
		t.Errorf("?types=kill,bogus: %s %q, want 400 naming the type", resp.Status, b)
	}

	// Snapshots, filtered.
	s := openEvents(t, d, "?types=snapshot")
	m := s.next(t, 10*time.Second)
	if m["type"] != "snapshot" || m["status"] == nil || m["details"] == nil {
		t.Errorf("snapshot event %v", m)
	}

	// The command, raw and readable, until the daemon stops.
	follow := func(args ...string) (*exec.Cmd, *bufio.Scanner, *strings.Builder) {
		cmd := exec.Command(supervisorBin, append([]string{"events", "--api-socket", d.api}, args...)...)
		out, _ := cmd.StdoutPipe()
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, bufio.NewScanner(out), &errb
	}
	raw, rawOut, rawErr := follow("--json", "--types", "snapshot")
	text, textOut, textErr := follow("--types", "snapshot")
	if !rawOut.Scan() {
		t.Fatalf("events --json printed nothing: %s", rawErr)
	}
	var ev map[string]any
	if err := json.Unmarshal(rawOut.Bytes(), &ev); err != nil || ev["type"] != "snapshot" {
		t.Errorf("events --json line %q: %v", rawOut.Text(), err)
	}
	if !textOut.Scan() {
		t.Fatalf("events printed nothing: %s", textErr)
	}
	if l := textOut.Text(); !strings.Contains(l, " snapshot ") || !strings.Contains(l, " status=") {
		t.Errorf("events line %q, want the time, snapshot and status=", l)
	}

	// Stopping the daemon ends every stream at once: the web server does
	// not wait for the streaming handlers. Had they held it up, it would
	// close their connections after its 2 s bound, and the clients would
	// read a cut chunked body ("unexpected EOF"), not the end of the stream.
	t0 := time.Now()
	d.stop(t)
	t.Logf("stop took %s", time.Since(t0))
	for _, c := range []struct {
		cmd  *exec.Cmd
		errb *strings.Builder
	}{{raw, rawErr}, {text, textErr}} {
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("supervisor events still running 10 s after the daemon stopped")
		}
		if code := c.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(c.errb.String(), "ended the stream") {
			t.Errorf("supervisor events after the daemon stopped: exit %d, %q", code, c.errb.String())
		}
	}
}

// A reload that changes max age sends a deadline event for each agent; an
// agent that exits leaving a child sends a leftover event, then the
// child's kill record with reason leftover.
func TestIntegrationEventsDeadlineAndLeftover(t *testing.T) {
	if ranApart(t) {
		return
	}
	conf := newConf(t, "REAPER_MAX_AGE=1h")
	d := startDaemon(t, "--config", conf, "--agent", "evdead", "--leftover-grace", "1s", "--kill-grace", "1s")
	s := openEvents(t, d, "?types=agent,deadline,leftover,kill")

	a := startAgent(t, "evdead")
	var found map[string]any
	for found == nil {
		if m := s.next(t, 20*time.Second); m["type"] == "agent" && int(num(m["pid"])) == a.pid {
			found = m
		}
	}
	writeConf(t, conf, "REAPER_MAX_AGE=2h")
	d.hup()
	m := s.next(t, 20*time.Second)
	if m["type"] != "deadline" || int(num(m["pid"])) != a.pid || m["cause"] != "reload" || m["reason"] != "max_age" {
		t.Fatalf("after the reload: %v, want a deadline event for %d", m, a.pid)
	}
	start := eventTime(t, found, "started_at")
	if got := eventTime(t, m, "previous").Sub(start); got < time.Hour-time.Millisecond || got > time.Hour+time.Millisecond {
		t.Errorf("deadline event: previous %s after start, want 1h", got)
	}
	if got := eventTime(t, m, "deadline").Sub(start); got < 2*time.Hour-time.Millisecond || got > 2*time.Hour+time.Millisecond {
		t.Errorf("deadline event: deadline %s after start, want 2h", got)
	}

	// An agent that exits at once, leaving its child.
	b := startAgent(t, "evdead", "-children", "1", "-exit-after", "500ms")
	b.waitExit(t, 10*time.Second)
	var left map[string]any
	end := time.Now().Add(30 * time.Second)
	for {
		m := s.next(t, time.Until(end))
		if num(m["session_pid"]) != int64(b.pid) || int(num(m["pid"])) == b.pid {
			continue // b's own agent event, or a's
		}
		switch m["type"] {
		case "leftover":
			left = m
			if m["comm"] != "exe" || m["rule"] != "evdead" {
				t.Errorf("leftover event %v", m)
			}
			// kill_at is the agent's exit + the leftover grace.
			if d := eventTime(t, m, "kill_at").Sub(eventTime(t, m, "time")); d < 0 || d > 1100*time.Millisecond {
				t.Errorf("leftover event: kill_at %s after it was queued, want within the 1s grace", d)
			}
			continue
		case "kill":
			if left == nil || num(m["pid"]) != num(left["pid"]) {
				t.Fatalf("kill event %v before the leftover event of its process", m)
			}
			// Each event converts boottime to wall time anew: within a millisecond.
			skew := eventTime(t, m, "deadline").Sub(eventTime(t, left, "kill_at")).Abs()
			if m["reason"] != "leftover" || m["outcome"] != "terminated" || skew > time.Millisecond {
				t.Errorf("leftover kill event %v, want reason leftover at the leftover event's kill_at", m)
			}
			return
		}
	}
}
