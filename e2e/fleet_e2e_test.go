package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// fleetJSON runs `supervisor fleet --json` against db and returns its hosts
// by name.
func fleetJSON(t *testing.T, db string) map[string]map[string]any {
	t.Helper()
	out, errs, code := runCLI(t, "fleet", "--json", "--database-url", db)
	if code != 0 {
		t.Fatalf("fleet --json: exit %d: %s", code, errs)
	}
	var hosts []map[string]any
	if err := json.Unmarshal([]byte(out), &hosts); err != nil {
		t.Fatalf("fleet --json printed no JSON array: %v\n%s", err, out)
	}
	byHost := map[string]map[string]any{}
	for _, h := range hosts {
		name, _ := h["host"].(string)
		byHost[name] = h
	}
	return byHost
}

// waitFleet polls `supervisor fleet --json` until cond holds for the hosts
// or the timeout passes, and returns the hosts seen last.
func waitFleet(t *testing.T, db string, timeout time.Duration, what string, cond func(map[string]map[string]any) bool) map[string]map[string]any {
	t.Helper()
	var hosts map[string]map[string]any
	defer func() {
		if t.Failed() {
			b, _ := json.MarshalIndent(hosts, "", "  ")
			t.Logf("fleet:\n%s", b)
		}
	}()
	waitFor(t, timeout, func() bool {
		hosts = fleetJSON(t, db)
		return cond(hosts)
	}, "%s", what)
	return hosts
}

// TestIntegrationFleet: two daemons with their own --host-id write to one
// database every second. While both run, `supervisor fleet` shows both
// live; once one is stopped it is marked silent (after 3 of its 1 s
// intervals) and the other stays live, with its kill of the last day
// counted by reason.
func TestIntegrationFleet(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	live, quiet := testutil.RandName("fleet-live-"), testutil.RandName("fleet-quiet-")
	dl := startDaemon(t, "--database-url", db, "--host-id", live, "--summary-interval", "1s",
		"--max-age", maxAge.String(), "--kill-grace", "1s")
	// The second daemon matches no process (its one agent rule names
	// nothing that runs): the agent below is the first daemon's alone.
	dq := startDaemon(t, "--database-url", db, "--host-id", quiet, "--summary-interval", "1s",
		"--agent", testutil.RandName("fq")[:14])
	for _, h := range []string{live, quiet} {
		if n := waitCount(t, conn, 30*time.Second, 3, `SELECT count(*) FROM tel.system_health
			WHERE host = $1 AND (details->>'summary_interval_s')::float8 = 1`, h); n < 3 {
			t.Fatalf("%s: %d snapshots recording summary_interval_s 1, want 3", h, n)
		}
	}
	both := func(hosts map[string]map[string]any) bool {
		return hosts[live] != nil && hosts[quiet] != nil && hosts[live]["silent"] == false && hosts[quiet]["silent"] == false
	}
	waitFleet(t, db, 30*time.Second, "both hosts live while both daemons run", both)

	a := startAgent(t, "claude")
	a.waitLine(t, "pid", 10*time.Second)
	dl.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	if waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND host = $2 AND outcome <> 'pending'", a.pid, live) != 1 {
		t.Fatal("no kill row for the agent")
	}

	dq.stop(t)
	stopped := time.Now()
	hosts := waitFleet(t, db, 60*time.Second, "the stopped host silent, the running one live",
		func(hosts map[string]map[string]any) bool {
			return hosts[quiet] != nil && hosts[quiet]["silent"] == true && hosts[live] != nil && hosts[live]["silent"] == false
		})
	if since := time.Since(stopped); since < 2*time.Second {
		t.Errorf("silent %s after the stop: sooner than 3 intervals after its last snapshot", since)
	}
	for _, h := range []string{live, quiet} {
		v := hosts[h]
		if len(v) != 8 {
			t.Errorf("%s: %d keys, want 8: %v", h, len(v), v)
		}
		for _, k := range []string{"last_snapshot", "status", "agents", "zombies", "free_mem_mb"} {
			if v[k] == nil {
				t.Errorf("%s: %s is null", h, k)
			}
		}
		if last, err := time.Parse(time.RFC3339Nano, v["last_snapshot"].(string)); err != nil || time.Since(last) > time.Hour {
			t.Errorf("%s: last_snapshot %v (%v)", h, v["last_snapshot"], err)
		}
	}
	kl, _ := hosts[live]["kills_24h"].(map[string]any)
	kq, _ := hosts[quiet]["kills_24h"].(map[string]any)
	if len(kl) != 1 || kl["max_age"] != 1.0 {
		t.Errorf("%s: kills_24h %v, want {max_age: 1}", live, hosts[live]["kills_24h"])
	}
	if kq == nil || len(kq) != 0 {
		t.Errorf("%s: kills_24h %v, want {}", quiet, hosts[quiet]["kills_24h"])
	}

	// The table: SILENT on the stopped host's line only.
	out, errs, code := runCLI(t, "fleet", "--database-url", db)
	if code != 0 {
		t.Fatalf("fleet: exit %d: %s", code, errs)
	}
	var lq, ll string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, quiet+" "):
			lq = l
		case strings.HasPrefix(l, live+" "):
			ll = l
		}
	}
	if !strings.Contains(lq, "SILENT") || ll == "" || strings.Contains(ll, "SILENT") || !strings.Contains(ll, "max_age 1") {
		t.Errorf("table:\n%s", out)
	}
	// --fail-silent: exit 3 while a host is silent (a monitoring check).
	if _, errs, code := runCLI(t, "fleet", "--fail-silent", "--database-url", db); code != 3 {
		t.Errorf("fleet --fail-silent with a silent host: exit %d, want 3: %s", code, errs)
	}

	// Without a database: exit 2 naming what to give; unreachable: exit 1.
	if _, errs, code := runCLIEnv(t, []string{"DATABASE_URL=", "DATABASE_URL_FILE="}, "fleet"); code != 2 || !strings.Contains(errs, "no database given") {
		t.Errorf("no database: exit %d %q", code, errs)
	}
	if _, errs, code := runCLI(t, "fleet", "--database-url", "postgres://u:fleetpw@127.0.0.1:1/x?connect_timeout=5"); code != 1 ||
		!strings.Contains(errs, "database") || strings.Contains(errs, "fleetpw") {
		t.Errorf("unreachable database: exit %d %q", code, errs)
	}
}
