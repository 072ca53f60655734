package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestIntegrationMetricsAndAgents(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", maxAge.String())
	if r := d.findLogs(func(m map[string]any) bool { return m["msg"] == "ready" }); len(r) != 1 || r[0]["realtime_timer"] != true {
		t.Errorf("ready line does not report the SCHED_FIFO deadline thread: %v", r)
	}
	a := startAgent(t, "claude", "--", "agent-args")
	d.waitTracked(t, a.pid)
	// /agents: the documented fields, nothing missing.
	var raw []map[string]any
	d.get(t, "/agents", &raw)
	found := false
	for _, m := range raw {
		if num(m["pid"]) != int64(a.pid) {
			continue
		}
		found = true
		for _, k := range []string{"pid", "comm", "cmdline", "started_at", "deadline", "seconds_left", "rule"} {
			if _, ok := m[k]; !ok {
				t.Errorf("/agents entry lacks %q: %v", k, m)
			}
		}
		if left := m["seconds_left"].(float64); left <= 0 || left > maxAge.Seconds() {
			t.Errorf("seconds_left %v", left)
		}
		if !strings.Contains(m["cmdline"].(string), "agent-args") {
			t.Errorf("cmdline %v", m["cmdline"])
		}
	}
	if !found {
		t.Fatal("agent not in /agents")
	}
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "snapshot" })

	text := scrape(t, d)
	for _, want := range []string{
		`supervisor_events_total{type="fork"}`, `supervisor_events_total{type="exit"}`,
		"supervisor_events_lost_total 0", "supervisor_resyncs_total", "supervisor_processes_tracked",
		"supervisor_agents_tracked", `supervisor_kills_total{outcome="terminated",reason="max_age",signal="TERM"} 1`,
		"supervisor_sessions", "supervisor_session_members", "supervisor_leftovers_pending",
		"supervisor_kill_lateness_seconds_bucket{le=\"0.0001\"}", "supervisor_kill_lateness_seconds_count 1",
		"supervisor_zombies", `supervisor_memory_bytes{kind="available"}`, "supervisor_db_spool_rows",
		"supervisor_last_snapshot_timestamp_seconds", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, strings.SplitN(want, "{", 2)[0]) {
					t.Logf("  has %s", l)
				}
			}
		}
	}
	if strings.Contains(text, "supervisor_db_up") {
		t.Error("supervisor_db_up without a database")
	}
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Status != "ok" || h.Source != "netlink" || h.Database != "none" || h.LastSnap == "" || !h.Realtime {
		t.Errorf("healthz %+v", h)
	}
}

func TestIntegrationStatus(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	var agents []*agent
	for range 20 {
		agents = append(agents, startAgent(t, "claude"))
	}
	for _, a := range agents {
		d.waitTracked(t, a.pid)
	}
	out, errs, code := runCLI(t, "status", "--api-socket", d.api)
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("line %d is %d columns: %q", i, n, l)
		}
	}
	if !strings.Contains(lines[0], "source netlink") || !strings.Contains(out, "events/s") || !strings.Contains(out, "lost") ||
		!strings.Contains(out, "snapshot") || !strings.Contains(out, "database none") {
		t.Errorf("header:\n%s", out)
	}
	for _, a := range agents {
		if !strings.Contains(out, fmt.Sprintf("%7d  claude", a.pid)) {
			t.Errorf("agent %d missing from\n%s", a.pid, out)
		}
	}
	if !strings.Contains(out, "[") || !strings.Contains(out, "59m") {
		t.Errorf("no bar or time left:\n%s", out)
	}
	t.Logf("status:\n%s", out)

	_, errs, code = runCLI(t, "status", "--api-socket", filepath.Join(t.TempDir(), "api.sock"))
	if code != 1 || !strings.Contains(errs, "no daemon answers") {
		t.Errorf("no daemon: exit %d, %q", code, errs)
	}
}

func TestIntegrationHistorySpool(t *testing.T) {
	if ranApart(t) {
		return
	}
	state := t.TempDir()
	d := startDaemon(t, "--max-age", maxAge.String(), "--state-dir", state)
	a := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	d.stop(t)
	out, errs, code := runCLI(t, "history", "--state-dir", state, "--since", "1h", "--json")
	if code != 0 {
		t.Fatalf("history exit %d: %s", code, errs)
	}
	var recs []map[string]any
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("history --json: %v\n%s", err, out)
	}
	kinds := map[string]int{}
	for _, r := range recs {
		kinds[r["kind"].(string)]++
		if r["kind"] == "kill" && num(r["kill"].(map[string]any)["pid"]) != int64(a.pid) {
			t.Errorf("kill of %v", r["kill"])
		}
	}
	if kinds["kill"] != 1 || kinds["snapshot"] < 1 {
		t.Errorf("history holds %v, want a kill and a snapshot", kinds)
	}
	out, _, code = runCLI(t, "history", "--state-dir", state)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("pid %d claude: terminated by SIGTERM", a.pid)) || !strings.Contains(out, "snapshot") {
		t.Errorf("history table (exit %d):\n%s", code, out)
	}
}

func TestIntegrationHistoryDatabase(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", db)
	a := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1", a.pid)
	out, errs, code := runCLI(t, "history", "--database-url", db, "--state-dir", t.TempDir(), "--json")
	if code != 0 {
		t.Fatalf("history exit %d: %s", code, errs)
	}
	if !strings.Contains(out, fmt.Sprintf(`"pid": %d`, a.pid)) || !strings.Contains(out, `"kind": "snapshot"`) {
		t.Errorf("history from the database:\n%s", out)
	}
}

// TestIntegrationSIGHUP: a reload shortens max age for an agent already
// tracked (killed at its start + the new age, not reload + age), and a bad
// configuration is rejected with the old one kept.
func TestIntegrationSIGHUP(t *testing.T) {
	if ranApart(t) {
		return
	}
	conf := newConf(t, "# test", "REAPER_MAX_AGE=1h")
	d := startDaemon(t, "--config", conf)
	a := startAgent(t, "claude")
	if v := d.waitTracked(t, a.pid); v.SecondsLeft < 3000 {
		t.Fatalf("max age from the config file not in force: %+v", v)
	}
	sleepUntil(a.t0 + int64(1500*time.Millisecond)) // part of the agent's life passes before the reload
	const newAge = 3 * time.Second
	writeConf(t, conf, "REAPER_MAX_AGE=3s")
	d.reload(t)
	m := d.waitLog(t, 20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, newAge)
	if sig := num(m["signalled_boot_ns"]); sig > a.t0+int64(newAge)+int64(time.Second) {
		t.Errorf("killed %s after start: the reload reset the agent's age", time.Duration(sig-a.t0))
	}

	writeConf(t, conf, "REAPER_MAX_AGE=soon")
	rej := d.reloadRejected(t)
	if !strings.Contains(fmt.Sprint(rej["error"]), "REAPER_MAX_AGE") {
		t.Errorf("rejection does not name the variable: %v", rej)
	}
	b := startAgent(t, "claude")
	m = d.waitLog(t, 20*time.Second, killOf(b.pid))
	checkKill(t, m, b, newAge)
	if dl := num(m["deadline_boot_ns"]) - num(m["start_boot_ns"]); dl > int64(newAge)+int64(20*time.Millisecond) {
		t.Errorf("after a rejected reload max age is %s, want the old %s", time.Duration(dl), newAge)
	}
}

// TestIntegrationShutdownFlush: rows spooled during an outage are delivered
// by a clean shutdown once the database is back.
func TestIntegrationShutdownFlush(t *testing.T) {
	if ranApart(t) {
		return
	}
	c := newCluster(t)
	dsn := c.url(c.password)
	c.stop(t)
	state := t.TempDir()
	d := startDaemon(t, "--database-url", dsn, "--state-dir", state, "--max-age", "1h")
	d.waitLog(t, 20*time.Second, msgHas("database unreachable"))
	d.waitLog(t, 20*time.Second, func(m map[string]any) bool { return m["msg"] == "snapshot" })
	pending := spooled(t, state)
	if len(pending) == 0 {
		t.Fatal("nothing spooled during the outage")
	}
	c.start(t)
	d.stop(t)
	if !d.cmd.ProcessState.Success() {
		t.Fatalf("exit %v", d.cmd.ProcessState)
	}
	if left := spooled(t, state); len(left) != 0 {
		t.Errorf("%d rows left in the spool after a clean shutdown", len(left))
	}
	conn := dbConn(t, dsn)
	for _, r := range pending {
		if n := queryInt(t, conn, "SELECT count(*) FROM tel.system_health WHERE row_id = $1", r.ID); n != 1 {
			t.Errorf("snapshot %s: %d rows", r.ID, n)
		}
	}

}

// TestIntegrationMetricsFromStart: before any kill, every known
// supervisor_kills_total series is there at 0, and the lateness buckets
// print as round numbers.
func TestIntegrationMetricsFromStart(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	text := scrape(t, d)
	// The (signal, outcome) pairs a kill can end with: the final signal
	// is the last one sent, none when none was.
	killSeries := [][2]string{{"TERM", "terminated"}, {"KILL", "killed"}, {"TERM", "already_gone"},
		{"TERM", "failed"}, {"KILL", "failed"}, {"none", "dry_run"}, {"none", "refused"}}
	for _, c := range killSeries {
		for _, reason := range []string{"max_age", "leftover"} {
			want := fmt.Sprintf("supervisor_kills_total{outcome=%q,reason=%q,signal=%q} 0\n", c[1], reason, c[0])
			if !strings.Contains(text, want) {
				t.Errorf("/metrics of a fresh daemon lacks %s", strings.TrimSpace(want))
			}
		}
		want := fmt.Sprintf("supervisor_leftovers_total{outcome=%q} 0\n", c[1])
		if !strings.Contains(text, want) {
			t.Errorf("/metrics of a fresh daemon lacks %s", strings.TrimSpace(want))
		}
	}
	var les []string
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, `supervisor_kill_lateness_seconds_bucket{le="`); ok {
			le, _, _ := strings.Cut(rest, `"`)
			les = append(les, le)
		}
	}
	want := "0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf"
	if got := strings.Join(les, " "); got != want {
		t.Errorf("lateness buckets\n got %s\nwant %s", got, want)
	}
}

// TestIntegrationHTTPHostCheck: a request naming another host (a DNS
// rebinding attack through the operator's browser) is refused with 403;
// the TCP listener serves /healthz and /metrics, and /agents and /events
// are not there (the API socket has them), on loopback or not.
func TestIntegrationHTTPHostCheck(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	_, port, _ := net.SplitHostPort(d.addr)
	get := func(addr, host, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/healthz", "/agents", "/events", "/metrics"} {
		if code, body := get(d.addr, "rebind.example:"+port, path); code != http.StatusForbidden || !strings.Contains(body, "Host") {
			t.Errorf("GET %s with a foreign Host: %d %q, want 403", path, code, body)
		}
		want := http.StatusOK
		if path == "/agents" || path == "/events" {
			want = http.StatusNotFound
		}
		for _, host := range []string{d.addr, "localhost:" + port} {
			if code, body := get(d.addr, host, path); code != want {
				t.Errorf("GET %s with Host %s: %d %q, want %d", path, host, code, body, want)
			}
		}
	}

	wide := startDaemon(t, "--max-age", "1h", "--listen", "0.0.0.0:0")
	_, port, _ = net.SplitHostPort(wide.addr)
	if code, _ := get("127.0.0.1:"+port, "rebind.example", "/healthz"); code != http.StatusForbidden {
		t.Errorf("0.0.0.0: foreign Host got %d, want 403", code)
	}
	if code, _ := get("127.0.0.1:"+port, "127.0.0.1:"+port, "/healthz"); code != http.StatusOK {
		t.Errorf("0.0.0.0: loopback Host got %d, want 200", code)
	}
	if code, _ := get("127.0.0.1:"+port, "127.0.0.1:"+port, "/agents"); code != http.StatusNotFound {
		t.Errorf("0.0.0.0: /agents got %d, want 404", code)
	}
}

// nodeIP returns a non-loopback IPv4 address of this machine, as a node's
// status.hostIP would be, or 127.0.0.1 when there is none.
func nodeIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Log("no non-loopback IPv4 address: --metrics-listen is tested on 127.0.0.1")
	return "127.0.0.1"
}

// getHost GETs path from addr with the given Host header.
func getHost(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsListen: --metrics-listen on the node's address serves /metrics
// and /healthz to a scraper that names that address (as Prometheus does
// with a hostNetwork pod's IP), and nothing that shows processes; the
// loopback listener answers the kubelet's probe (httpGet.host 127.0.0.1)
// and shows no processes either.
func TestMetricsListen(t *testing.T) {
	if ranApart(t) {
		return
	}
	ip := nodeIP(t)
	d := startDaemon(t, "--metrics-listen", net.JoinHostPort(ip, "0"))
	m := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := m["metrics_listen"].(string)
	if host, _, _ := net.SplitHostPort(maddr); host != ip {
		t.Fatalf("metrics listener on %q, want on %s", maddr, ip)
	}

	code, body := getHost(t, maddr, maddr, "/metrics")
	if code != 200 || !strings.Contains(body, "supervisor_events_total") || !strings.Contains(body, "supervisor_kills_total") {
		t.Errorf("GET /metrics on --metrics-listen: %d, %.200q", code, body)
	}
	if code, body := getHost(t, maddr, maddr, "/healthz"); code != 200 || !strings.Contains(body, `"status": "ok"`) {
		t.Errorf("GET /healthz on --metrics-listen: %d %.200q", code, body)
	}
	for _, p := range []string{"/agents", "/events", "/"} {
		if code, body := getHost(t, maddr, maddr, p); code != http.StatusNotFound {
			t.Errorf("GET %s on --metrics-listen: %d %.200q, want 404 (it shows processes)", p, code, body)
		}
	}
	if code, _ := getHost(t, maddr, "rebind.example", "/metrics"); code != http.StatusForbidden {
		t.Errorf("GET /metrics on --metrics-listen with a foreign Host: %d, want 403", code)
	}
	// The kubelet's probe with hostNetwork: httpGet.host 127.0.0.1 sends
	// that address as the Host.
	if code, body := getHost(t, d.addr, d.addr, "/healthz"); code != 200 {
		t.Errorf("probe of --listen %s: %d %.200q", d.addr, code, body)
	}
	if code, _ := getHost(t, d.addr, d.addr, "/agents"); code != http.StatusNotFound {
		t.Errorf("GET /agents on --listen: %d, want 404 (it is on the API socket)", code)
	}
}

// TestMetricsListenAlone: with --listen empty the metrics listener still
// serves, and stops cleanly with the daemon.
func TestMetricsListenAlone(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--listen", "", "--metrics-listen", "127.0.0.1:0")
	m := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := m["metrics_listen"].(string)
	if code, body := getHost(t, maddr, maddr, "/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d %.200q", code, body)
	}
	d.stop(t)
	if d.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("daemon exit status %d, want 0", d.cmd.ProcessState.ExitCode())
	}
	if _, err := net.DialTimeout("tcp", maddr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after the daemon stopped", maddr)
	}
}
