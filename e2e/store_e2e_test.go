package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/statefile"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// runOnce runs `supervisor once` scoped to this test and returns its JSON,
// its log lines and its exit code.
func runOnce(t *testing.T, env []string, args ...string) (map[string]any, []map[string]any, int) {
	t.Helper()
	stdout, stderr, code := runCLIEnv(t, env, append([]string{"once", "--under", strconv.Itoa(os.Getpid())}, args...)...)
	var logs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			logs = append(logs, m)
		}
	}
	var res map[string]any
	if code == 0 {
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("once printed no JSON: %v\n%s\nstderr: %s", err, stdout, stderr)
		}
	}
	return res, logs, code
}

var seedKeys = []string{"zombie_count", "zombie_threshold", "free_mem_mb", "swap_used_mb", "swap_pct",
	"stale_processes_killed", "max_age_minutes"}

// TestIntegrationSeedTableCompat: against a tel.system_health created the
// way the seed's users created it, `once` kills a stale agent, writes a row
// with the seed's keys and more, keeps the old rows, and prints the seed's
// JSON.
func TestIntegrationSeedTableCompat(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, testutil.SeedTable+`;
		INSERT INTO tel.system_health (check_type, status, details, action_taken)
			VALUES ('process_reaper', 'ok', '{"zombie_count": 0}', NULL)`); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "claude")
	a.waitLine(t, "pid", 10*time.Second)
	sleepUntil(a.t0 + int64(1200*time.Millisecond)) // let it grow older than the max age below
	before := time.Now()
	res, logs, code := runOnce(t, []string{"DATABASE_URL=" + db, "REAPER_MAX_AGENT_AGE_MINUTES=5"},
		"--max-age", "1s", "--kill-grace", "2s", "--state-dir", t.TempDir(), "--host-id", "seed-host")
	if code != 0 {
		t.Fatalf("once exit %d: %v", code, logs)
	}
	for _, k := range append(seedKeys, "status", "duration_seconds", "killed") {
		if _, ok := res[k]; !ok {
			t.Errorf("once output lacks %q: %v", k, res)
		}
	}
	killed, _ := res["killed"].([]any)
	if len(killed) != 1 || num(killed[0].(map[string]any)["pid"]) != int64(a.pid) || killed[0].(map[string]any)["comm"] != "claude" {
		t.Fatalf("killed %v, want the agent %d", killed, a.pid)
	}
	if _, ok := killed[0].(map[string]any)["ageMinutes"]; !ok {
		t.Error("killed entry lacks ageMinutes")
	}
	if res["stale_processes_killed"] != 1.0 || res["max_age_minutes"] != 0.0 {
		t.Errorf("stale_processes_killed %v, max_age_minutes %v", res["stale_processes_killed"], res["max_age_minutes"])
	}
	a.waitExit(t, 10*time.Second)

	if n := queryInt(t, conn, "SELECT count(*) FROM tel.system_health"); n != 2 {
		t.Fatalf("%d rows, want the seed's and ours", n)
	}
	var status, host string
	var action *string
	var details map[string]any
	var created time.Time
	if err := conn.QueryRow(ctx, `SELECT status, host, details, action_taken, created_at::timestamptz FROM tel.system_health
		WHERE row_id IS NOT NULL`).Scan(&status, &host, &details, &action, &created); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(seedKeys, "zombie_parents", "mem_available_mb", "psi_memory_some_avg10",
		"processes_tracked", "agents_tracked", "events_lost", "resyncs", "event_source", "oldest_agent_age_seconds") {
		if _, ok := details[k]; !ok {
			t.Errorf("details lack %q", k)
		}
	}
	if host != "seed-host" || action == nil || *action != fmt.Sprintf("Killed PIDs: %d", a.pid) {
		t.Errorf("host %q, action_taken %v", host, action)
	}
	if created.Before(before.Add(-time.Second)) || created.After(time.Now()) {
		t.Errorf("created_at %v, not when the snapshot was taken (%v)", created, before)
	}
	if kills := queryInt(t, conn, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND host = 'seed-host'", a.pid); kills != 1 {
		t.Errorf("%d kill rows for the agent, want 1", kills)
	}
}

// TestIntegrationKillRows: the daemon writes one tel.agent_kills row per
// reaped agent as it happens.
func TestIntegrationKillRows(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1s", "--database-url", db, "--host-id", "kills")
	a := startAgent(t, "claude", "-children", "1", "-child-ignore-term")
	a.waitLine(t, "pid", 10*time.Second)
	child := a.waitPID(t, "pid", 10*time.Second)
	m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	// The row is spooled pending at the first signal and replaced by the
	// complete one when the tree is gone: wait for the complete one.
	if waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'", a.pid) != 1 {
		t.Fatal("no complete kill row")
	}
	var (
		host, comm, cmdline, rule, outcome string
		final                              *string
		started, deadline, signalled       time.Time
		exited                             *time.Time
		desc                               []int32
		dry                                bool
		late                               float64
	)
	if err := conn.QueryRow(context.Background(), `SELECT host, comm, cmdline, rule, outcome, final_signal, started_at,
		deadline, signalled_at, exited_at, descendants, dry_run, lateness_ms FROM tel.agent_kills WHERE pid = $1`, a.pid).
		Scan(&host, &comm, &cmdline, &rule, &outcome, &final, &started, &deadline, &signalled, &exited, &desc, &dry, &late); err != nil {
		t.Fatal(err)
	}
	if host != "kills" || comm != "claude" || !strings.Contains(cmdline, "claude") || rule != "claude" || dry {
		t.Errorf("row: host %q comm %q cmdline %q rule %q dry %v", host, comm, cmdline, rule, dry)
	}
	if outcome != "killed" || final == nil || *final != "KILL" || len(desc) != 1 || int(desc[0]) != child {
		t.Errorf("outcome %q final %v descendants %v (child %d)", outcome, final, desc, child)
	}
	if d := deadline.Sub(started); d < maxAge || d > maxAge+20*time.Millisecond {
		t.Errorf("deadline - start = %s", d)
	}
	if signalled.Before(deadline) || exited == nil || exited.Before(signalled) {
		t.Errorf("deadline %v signalled %v exited %v", deadline, signalled, exited)
	}
	if want := float64(num(m["lateness_ns"])) / 1e6; late != want {
		t.Errorf("lateness_ms %v, log says %v", late, want)
	}
	if m := scrape(t, d); !strings.Contains(m, "\nsupervisor_db_up 1\n") {
		t.Error("/metrics does not say supervisor_db_up 1")
	}
}

// TestIntegrationZombiesAndThresholds: zombies are attributed to the parent
// that never waits for them, and the seed's warning rules decide status.
func TestIntegrationZombiesAndThresholds(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	z := startAgent(t, "zmaker", "-zombies", "3")
	z.waitLine(t, "zombies ready", 10*time.Second)
	calm := []string{"REAPER_ZOMBIE_WARN_THRESHOLD=1000000", "REAPER_FREE_MEM_WARN_MB=0", "REAPER_SWAP_WARN_PCT=1"}
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"calm", calm, "ok"},
		{"zombies", []string{"REAPER_ZOMBIE_WARN_THRESHOLD=2", "REAPER_FREE_MEM_WARN_MB=0", "REAPER_SWAP_WARN_PCT=1"}, "warning"},
		{"memory", []string{"REAPER_ZOMBIE_WARN_THRESHOLD=1000000", "REAPER_FREE_MEM_WARN_MB=100000000", "REAPER_SWAP_WARN_PCT=1"}, "warning"},
	}
	for _, c := range cases {
		res, logs, code := runOnce(t, append(c.env, "DATABASE_URL="+db), "--state-dir", t.TempDir(), "--host-id", c.name)
		if code != 0 {
			t.Fatalf("%s: exit %d %v", c.name, code, logs)
		}
		if res["status"] != c.want {
			t.Errorf("%s: status %v, want %s (%v)", c.name, res["status"], c.want, res)
		}
		if num(res["zombie_count"]) < 3 {
			t.Errorf("%s: zombie_count %v, want at least 3", c.name, res["zombie_count"])
		}
	}
	var parents []map[string]any
	if err := conn.QueryRow(context.Background(),
		`SELECT details->'zombie_parents' FROM tel.system_health WHERE host = 'calm'`).Scan(&parents); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range parents {
		if num(p["pid"]) == int64(z.pid) {
			found = true
			if num(p["zombies"]) != 3 || p["comm"] != "zmaker" {
				t.Errorf("zombie parent %v, want 3 zombies of zmaker", p)
			}
		}
	}
	if !found {
		t.Errorf("zombie_parents %v lacks the parent %d", parents, z.pid)
	}
}

// spooled reads the records left in a state dir's spool.
func spooled(t *testing.T, dir string) []store.Record {
	t.Helper()
	recs, _, err := store.ReadSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestIntegrationOutage: Postgres stops while agents are being reaped, the
// daemon is SIGKILLed, Postgres comes back, the daemon restarts on the same
// state dir: every kill and snapshot arrives once, with its original time.
func TestIntegrationOutage(t *testing.T) {
	if ranApart(t) {
		return
	}
	c := newCluster(t)
	dsn := c.url(c.password)
	conn := dbConn(t, dsn)
	state := t.TempDir()
	args := []string{"--control-socket", "", "--max-age", maxAge.String(), "--database-url", dsn, "--summary-interval", "1s",
		"--host-id", "outage", "--state-dir", state}
	d := startDaemonCmd(t, exec.Command(supervisorBin, append([]string{"run", "--listen", "127.0.0.1:0",
		"--under", strconv.Itoa(os.Getpid())}, args...)...))
	a1 := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(a1.pid))
	waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1", a1.pid)
	conn.Close(context.Background())

	c.stop(t)
	a2 := startAgent(t, "claude")
	a3 := startAgent(t, "claude")
	for _, a := range []*agent{a2, a3} {
		d.waitLog(t, maxAge+20*time.Second, killOf(a.pid)) // reaping goes on
		a.waitExit(t, 10*time.Second)
	}
	d.waitLog(t, 20*time.Second, msgHas("database unreachable"))
	// Two more snapshots into the outage, then kill the daemon hard.
	n := len(d.findLogs(func(m map[string]any) bool { return m["msg"] == "snapshot" }))
	seen := 0
	d.waitLog(t, 20*time.Second, func(m map[string]any) bool {
		if m["msg"] == "snapshot" {
			seen++
		}
		return seen >= n+2
	})
	if w := d.findLogs(msgHas("database unreachable")); len(w) != 1 {
		t.Errorf("outage logged %d times, want once", len(w))
	}
	d.cmd.Process.Kill()
	<-d.done

	pending := spooled(t, state)
	kinds := map[string]int{}
	for _, r := range pending {
		kinds[r.Kind]++
	}
	if kinds[store.KindKill] < 2 || kinds[store.KindSnapshot] < 2 {
		t.Fatalf("spool after the outage holds %v, want both kills and snapshots", kinds)
	}

	c.start(t)
	conn = dbConn(t, dsn)
	d2 := startDaemonCmd(t, exec.Command(supervisorBin, append([]string{"run", "--listen", "127.0.0.1:0",
		"--under", strconv.Itoa(os.Getpid())}, append(args[:len(args)-6], "--summary-interval", "1h",
		"--host-id", "outage", "--state-dir", state)...)...))
	_ = d2
	// Every spooled record arrives exactly once, with its original time.
	for _, r := range pending {
		var q string
		switch r.Kind {
		case store.KindKill:
			q = "SELECT count(*) FROM tel.agent_kills WHERE id = $1"
		default:
			q = "SELECT count(*) FROM tel.system_health WHERE row_id = $1"
		}
		if got := waitCount(t, conn, 30*time.Second, 1, q, r.ID); got != 1 {
			t.Fatalf("%s %s arrived %d times", r.Kind, r.ID, got)
		}
		var created time.Time
		tbl := map[string]string{store.KindKill: "tel.agent_kills WHERE id", store.KindSnapshot: "tel.system_health WHERE row_id"}[r.Kind]
		conn.QueryRow(context.Background(), "SELECT created_at FROM "+tbl+" = $1", r.ID).Scan(&created)
		if d := created.Sub(r.Created); d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("%s %s: created_at %v, spooled at %v", r.Kind, r.ID, created, r.Created)
		}
	}
	var kills []int
	rows, _ := conn.Query(context.Background(), "SELECT pid FROM tel.agent_kills WHERE host = 'outage' ORDER BY pid")
	for rows.Next() {
		var p int
		rows.Scan(&p)
		kills = append(kills, p)
	}
	want := []int{a1.pid, a2.pid, a3.pid}
	sort.Ints(want)
	if fmt.Sprint(kills) != fmt.Sprint(want) {
		t.Errorf("kill rows for pids %v, want each of %v once", kills, want)
	}
	if dup := queryInt(t, conn, `SELECT count(*) - count(DISTINCT created_at) FROM tel.system_health WHERE host = 'outage'`); dup != 0 {
		t.Errorf("%d duplicate snapshots", dup)
	}
	// The spool is cut back after the delivering transaction commits: the
	// rows above can be in the database a moment before they leave the
	// spool. Wait for it (the new start's own snapshot may still be on its
	// way).
	waitFor(t, 30*time.Second, func() bool { return len(spooled(t, state)) <= 1 }, "the spool emptied after recovery")
}

// TestIntegrationBadDatabase: a wrong password or a closed port is an
// outage, not a stop: clear error, reaping goes on, the password never
// appears in a log.
func TestIntegrationBadDatabase(t *testing.T) {
	if ranApart(t) {
		return
	}
	c := newCluster(t)
	wrong := testutil.RandName("wrongpw")
	for name, dsn := range map[string]string{
		"wrong password": c.url(wrong),
		"closed port":    fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=3", wrong, freePort(t)),
	} {
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", dsn)
			a := startAgent(t, "claude")
			m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
			checkKill(t, m, a, maxAge)
			w := d.waitLog(t, 20*time.Second, msgHas("database unreachable"))
			errMsg := fmt.Sprint(w["error"])
			if name == "wrong password" && !strings.Contains(errMsg, "password authentication failed") {
				t.Errorf("error %q does not say the password was wrong", errMsg)
			}
			if name == "closed port" && !strings.Contains(errMsg, "refused") {
				t.Errorf("error %q does not say the connection was refused", errMsg)
			}
			var h healthView
			d.get(t, "/healthz", &h)
			if h.Database != "down" {
				t.Errorf("healthz database %q, want down", h.Database)
			}
			if m := scrape(t, d); !strings.Contains(m, "\nsupervisor_db_up 0\n") {
				t.Error("/metrics does not say supervisor_db_up 0")
			}
			d.stop(t)
			d.mu.Lock()
			defer d.mu.Unlock()
			for _, l := range d.logs {
				b, _ := json.Marshal(l)
				if strings.Contains(string(b), wrong) {
					t.Errorf("the password reached the log: %s", b)
				}
			}
		})
	}
	// A malformed URL is a configuration error, and says so without the password.
	if _, errs, code := runCLI(t, "run", "--database-url", "postgres://u:"+wrong+"@host:notaport/db"); code != 2 ||
		!strings.Contains(errs, "--database-url") || strings.Contains(errs, wrong) {
		t.Errorf("malformed URL: exit %d, stderr %q", code, errs)
	}
}

// TestIntegrationTwoHostsAndRetention: two daemons with different host ids
// share a database; each deletes only its own old rows.
func TestIntegrationTwoHostsAndRetention(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	ctx := context.Background()
	// The first daemon creates the schema; then plant old rows for both hosts.
	d1 := startDaemon(t, "--database-url", db, "--host-id", "alpha", "--retention", "24h", "--max-age", "1h")
	waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = 'alpha'")
	old := time.Now().Add(-48 * time.Hour)
	for _, h := range []string{"alpha", "beta"} {
		if _, err := conn.Exec(ctx, `INSERT INTO tel.system_health (row_id, host, check_type, status, details, created_at)
			VALUES (gen_random_uuid(), $1, 'process_reaper', 'ok', '{}', $2)`, h, old); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
			signalled_at, lateness_ms, outcome, descendants, dry_run, created_at)
			VALUES (gen_random_uuid(), $1, 1, 'claude', '', 'claude', $2, $2, $2, 0, 'terminated', '{}', false, $2)`, h, old); err != nil {
			t.Fatal(err)
		}
	}
	d1.stop(t)
	// Both daemons at once: beta keeps 30 days, alpha 24 hours.
	startDaemon(t, "--database-url", db, "--host-id", "alpha", "--retention", "24h", "--max-age", "1h")
	startDaemon(t, "--database-url", db, "--host-id", "beta", "--retention", "720h", "--max-age", "1h")
	waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = 'beta' AND created_at > now() - interval '1 hour'")
	if n := waitCount(t, conn, 20*time.Second, 2, "SELECT count(*) FROM tel.system_health WHERE host = 'alpha' AND created_at > now() - interval '1 hour'"); n < 2 {
		t.Errorf("alpha wrote %d snapshots over two starts, want 2", n)
	}
	var alphaOld, betaOld int
	waitFor(t, 20*time.Second, func() bool {
		conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tel.system_health WHERE host = 'alpha' AND created_at < now() - interval '1 day')
			+ (SELECT count(*) FROM tel.agent_kills WHERE host = 'alpha')`).Scan(&alphaOld)
		return alphaOld == 0
	}, "alpha's old rows removed: %v left", &alphaOld)
	conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tel.system_health WHERE host = 'beta' AND created_at < now() - interval '1 day')
		+ (SELECT count(*) FROM tel.agent_kills WHERE host = 'beta')`).Scan(&betaOld)
	if alphaOld != 0 || betaOld != 2 {
		t.Errorf("old rows left: alpha %d (want 0), beta %d (want 2: its retention is 30 days)", alphaOld, betaOld)
	}
	migrations := queryInt(t, conn, "SELECT count(*) FROM tel.supervisor_migrations")
	files, _ := filepath.Glob(filepath.Join("..", "internal", "store", "migrations", "*.sql"))
	if migrations != len(files) {
		t.Errorf("%d migration rows, want %d (one per embedded file)", migrations, len(files))
	}
}

// TestIntegrationPasswordNeverPrinted: a database URL with a distinctive
// password, unreachable (a closed port), given by flag, environment,
// --config file and --database-url-file, to run, once and history; then a
// malformed one through a SIGHUP reload. The password appears in no
// output and no log line.
func TestIntegrationPasswordNeverPrinted(t *testing.T) {
	if ranApart(t) {
		return
	}
	const pw = "Pw-n0t-For-Your-Eyes-7731"
	closed := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=3", pw, freePort(t))
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "database-url")
	os.WriteFile(urlFile, []byte(closed+"\n"), 0o600)
	conf := filepath.Join(dir, "supervisor.conf")
	os.WriteFile(conf, []byte("DATABASE_URL="+closed+"\n"), 0o600)
	noPassword := func(what, text string) {
		t.Helper()
		if strings.Contains(text, pw) {
			t.Errorf("%s: the password was printed:\n%s", what, text)
		}
	}
	sources := map[string]struct{ args, env []string }{
		"flag":        {[]string{"--database-url", closed}, nil},
		"environment": {nil, []string{"DATABASE_URL=" + closed}},
		"config file": {[]string{"--config", conf}, nil},
		"url file":    {nil, []string{"DATABASE_URL_FILE=" + urlFile}},
	}
	for name, src := range sources {
		// once: one scan (nothing of this test is stale), a row that stays
		// in the spool, a warning.
		args := append([]string{"once", "--under", strconv.Itoa(os.Getpid()), "--state-dir", t.TempDir()}, src.args...)
		out, errs, code := runCLIEnv(t, src.env, args...)
		if code != 0 || !strings.Contains(errs, "the row stays in the spool") {
			t.Errorf("once via %s: exit %d, stderr %s", name, code, errs)
		}
		noPassword("once via "+name, out+errs)
		out, errs, code = runCLIEnv(t, src.env, append([]string{"history", "--state-dir", t.TempDir()}, src.args...)...)
		if code != 1 || !strings.Contains(errs, "database") {
			t.Errorf("history via %s: exit %d, stderr %s", name, code, errs)
		}
		noPassword("history via "+name, out+errs)
		out, errs, code = runCLIEnv(t, src.env, append([]string{"fleet"}, src.args...)...)
		if code != 1 || !strings.Contains(errs, "database") {
			t.Errorf("fleet via %s: exit %d, stderr %s", name, code, errs)
		}
		noPassword("fleet via "+name, out+errs)
	}

	// run, reading the file, then reloads: a malformed URL in the config
	// file, then in the URL file.
	os.WriteFile(conf, []byte("DATABASE_URL_FILE="+urlFile+"\n"), 0o600)
	d := startDaemon(t, "--config", conf, "--max-age", "1h")
	d.waitLog(t, 20*time.Second, msgHas("database unreachable"))
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Database != "down" {
		t.Errorf("healthz database %q, want down", h.Database)
	}
	os.WriteFile(conf, []byte("DATABASE_URL=postgres://u:"+pw+"@127.0.0.1:notaport/x\n"), 0o600)
	if r := d.reloadRejected(t); !strings.Contains(fmt.Sprint(r["error"]), "DATABASE_URL") {
		t.Errorf("rejection does not name the variable: %v", r)
	}
	os.WriteFile(conf, []byte("DATABASE_URL_FILE="+urlFile+"\n"), 0o600)
	os.WriteFile(urlFile, []byte("postgres://u:"+pw+"@127.0.0.1/x?sslmode=bogus\n"), 0o600)
	if r := d.reloadRejected(t); !strings.Contains(fmt.Sprint(r["error"]), urlFile) || !strings.Contains(fmt.Sprint(r["error"]), "xxxxx") {
		t.Errorf("rejection does not name the file or show the masked URL: %v", r)
	}
	d.stop(t)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.logs {
		b, _ := json.Marshal(l)
		noPassword("daemon log", string(b))
	}
}

// killRecords returns the spooled kill rows for pid.
func killRecords(t *testing.T, dir string, pid int) []store.Record {
	t.Helper()
	var out []store.Record
	for _, r := range spooled(t, dir) {
		if r.Kill != nil && int(r.Kill.PID) == pid {
			out = append(out, r)
		}
	}
	return out
}

// A kill is on record from its first signal: the row is spooled with
// outcome pending, a daemon SIGKILLed during a long grace leaves it, and the
// next daemon's kill of the same process replaces it with the complete row
// under the same id.
func TestIntegrationKillRecordPending(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	d := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "1h", "--state-dir", dir)
	d.stopSignal = syscall.SIGKILL
	a := startAgent(t, "claude", "-ignore-term")
	d.waitTracked(t, a.pid)
	m := d.waitLog(t, maxAge+30*time.Second, func(m map[string]any) bool {
		return m["msg"] == "kill record pending" && num(m["pid"]) == int64(a.pid)
	})
	d.stop(t) // SIGKILL, within the hour of grace
	recs := killRecords(t, dir, a.pid)
	if len(recs) != 1 || recs[0].Kill.Outcome != store.OutcomePending || recs[0].ID != m["id"] {
		t.Fatalf("after a crash mid-kill the spool holds %+v, want one pending row with id %v", recs, m["id"])
	}
	if recs[0].Kill.FinalSignal != "TERM" || recs[0].Kill.SignalledAt.IsZero() {
		t.Errorf("pending row %+v: want final signal TERM and the signal time", recs[0].Kill)
	}
	if !a.alive() {
		t.Fatal("the agent died without SIGKILL: the test proves nothing")
	}

	// A second daemon on the same state dir kills it (its deadline is
	// past) and completes the crashed daemon's row: the same kill, the
	// same id, one row.
	d2 := startDaemon(t, "--max-age", maxAge.String(), "--kill-grace", "500ms", "--state-dir", dir)
	m2 := d2.waitLog(t, 30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	d2.stop(t)
	recs = killRecords(t, dir, a.pid)
	if len(recs) != 1 {
		t.Fatalf("spool holds %d rows for the agent, want the crashed daemon's pending one completed: %+v", len(recs), recs)
	}
	done := recs[0]
	if done.ID != m["id"] {
		t.Errorf("complete row id %v, want the pending row's %v", done.ID, m["id"])
	}
	if done.Kill.Outcome != "killed" || done.Kill.Outcome != m2["outcome"] || done.Kill.ExitedAt == nil {
		t.Errorf("row %+v: want the complete row (killed, with its exit time)", done.Kill)
	}
}

// TestIntegrationDamagedSpool: a spool with a torn line in the middle, a
// torn write the next record followed on the same line, and garbage
// without a newline at the end. `history` reads every good row, the daemon
// starts, sets the bad bytes aside in spool.bad and keeps every good row.
func TestIntegrationDamagedSpool(t *testing.T) {
	if ranApart(t) {
		return
	}
	state := t.TempDir()
	now := time.Now().UTC()
	var good []store.Record
	var content bytes.Buffer
	torn := `{"seq":3,"kind":"snapshot","id":"0f`
	glued := `{"seq":5,"ki`
	garbage := "\x00\x00\x17garbage\xff"
	for i := range 6 {
		r := store.Record{Seq: uint64(i + 1), Kind: store.KindSnapshot, ID: store.NewID(), Host: "damaged", Created: now.Add(-time.Minute),
			Snapshot: &store.SnapshotRow{CheckType: store.CheckType, Status: "ok", Details: json.RawMessage(`{"zombie_count":7}`)}}
		if i == 2 {
			r.Kind, r.Snapshot = store.KindKill, nil
			r.Kill = &store.KillRow{PID: 4321, Comm: "claude", Outcome: "killed", Descendants: []int32{}}
		}
		good = append(good, r)
		b, _ := json.Marshal(r)
		switch i {
		case 2:
			content.WriteString(torn + "\n")
		case 4:
			content.WriteString(glued)
		}
		content.Write(append(b, '\n'))
	}
	content.WriteString(garbage)
	if err := os.WriteFile(filepath.Join(state, "spool.jsonl"), content.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	checkHistory := func(when string) {
		t.Helper()
		out, errs, code := runCLI(t, "history", "--state-dir", state, "--since", "1h", "--json")
		if code != 0 {
			t.Fatalf("%s: history exit %d: %s", when, code, errs)
		}
		var recs []store.Record
		if err := json.Unmarshal([]byte(out), &recs); err != nil {
			t.Fatalf("%s: history --json: %v\n%s", when, err, out)
		}
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.ID] = true
		}
		for _, r := range good {
			if !seen[r.ID] {
				t.Errorf("%s: history lacks good row %d (%s)", when, r.Seq, r.Kind)
			}
		}
	}
	checkHistory("before the daemon")

	d := startDaemon(t, "--max-age", "1h", "--state-dir", state)
	warn := d.waitLog(t, 10*time.Second, msgStarts("spool: damaged lines set aside"))
	if num(warn["lines"]) != 3 {
		t.Errorf("damaged lines %v, want 3", warn["lines"])
	}
	d.stop(t)
	bad := readFile(t, filepath.Join(state, "spool.bad"))
	for _, piece := range []string{torn, glued, garbage} {
		if !bytes.Contains(bad, []byte("\n"+piece+"\n")) {
			t.Errorf("spool.bad lacks %q:\n%q", piece, bad)
		}
	}
	checkHistory("after the daemon")
	if _, errs, _ := runCLI(t, "history", "--state-dir", state); strings.Contains(errs, "damaged") {
		t.Errorf("the spool still has damaged lines after the daemon set them aside: %s", errs)
	}
}

// savedMember is the member pid in the state dir's sessions.json, as the
// daemon last saved it; ok is false when the file does not name it.
func savedMember(t testing.TB, state string, pid int) (m tracker.MemberState, ok bool) {
	t.Helper()
	var saved []tracker.MemberState
	if err := statefile.Load(filepath.Join(state, "sessions.json"), &saved); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(saved, func(m tracker.MemberState) bool { return int(m.PID) == pid })
	if i < 0 {
		return m, false
	}
	return saved[i], true
}

// TestIntegrationTornStateFiles: sessions.json and leases.json written by
// a real daemon (three agents, each extended through the control socket),
// then cut at several offsets or replaced by garbage. A daemon started on
// each damaged file starts, says in one warning which file and what it
// kept and dropped, moves the damaged bytes aside to NAME.damaged, restores
// the whole entries before the damage, and writes a good file again.
func TestIntegrationTornStateFiles(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	state := t.TempDir()
	args := []string{"--max-age", "1h", "--control-socket", sock}
	d := startDaemon(t, append(args, "--state-dir", state)...)
	const agents = 3
	for range agents {
		a := startAgent(t, "claude")
		d.waitTracked(t, a.pid)
		mustCtl(t, sock, "extend", strconv.Itoa(a.pid), "1h")
	}
	d.stop(t) // SIGTERM: both files written
	whole := map[string][]byte{}
	for _, name := range []string{"sessions.json", "leases.json"} {
		b, err := os.ReadFile(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		whole[name] = b
	}

	type damage struct {
		file string
		data []byte
		kept int // -1: not known in advance
	}
	var cases []damage
	for name, b := range whole {
		ends := entryEnds(t, b)
		if len(ends) < agents {
			t.Fatalf("%s holds %d entries, want at least %d: %s", name, len(ends), agents, b)
		}
		for _, cut := range []int{ends[0] - 5, ends[0] + 1, len(b) / 2, len(b) - 4} {
			kept := 0
			for _, e := range ends {
				if e <= cut {
					kept++
				}
			}
			cases = append(cases, damage{name, b[:cut], kept})
		}
		cases = append(cases, damage{name, []byte("\x00\x00\xff garbage {\"boot_id\": [[["), 0},
			damage{name, bytes.Repeat([]byte{0}, len(b)), 0})
	}
	keptOf := map[string][]string{}
	for i, c := range cases {
		dir := t.TempDir()
		path := filepath.Join(dir, c.file)
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t, append(args, "--state-dir", dir, "--control-socket", ctlSocket(t))...)
		warn := d.waitLog(t, 20*time.Second, warnStarts(c.file+" damaged"))
		d.stop(t)
		what := fmt.Sprintf("case %d: %s cut to %d of %d bytes", i, c.file, len(c.data), len(whole[c.file]))
		if warns := d.findLogs(warnHas(c.file)); len(warns) != 1 {
			t.Errorf("%s: %d warnings about it, want one: %v", what, len(warns), warns)
		}
		if warn["file"] != path || num(warn["kept"]) != int64(c.kept) || num(warn["size"]) != int64(len(c.data)) ||
			num(warn["damaged_at"]) > int64(len(c.data)) || warn["moved_to"] != path+".damaged" {
			t.Errorf("%s: warning %v; want the file, %d entries kept, the size and where the damage is", what, warn, c.kept)
		}
		// Entries, not bytes: a file's size moves with its PIDs' digits,
		// and the table is checked against this line on every run.
		keptOf[c.file] = append(keptOf[c.file], fmt.Sprintf("%d kept", num(warn["kept"])))
		if b, err := os.ReadFile(path + ".damaged"); err != nil || !bytes.Equal(b, c.data) {
			t.Errorf("%s: the damaged bytes were not kept aside: %v", what, err)
		}
		if c.kept > 0 && c.file == "leases.json" {
			if m := d.findLogs(func(m map[string]any) bool { return m["msg"] == "leases restored" }); len(m) != 1 || num(m[0]["processes"]) != int64(c.kept) {
				t.Errorf("%s: %v; want the %d leases kept restored", what, m, c.kept)
			}
		}
		// A good file again, from what the daemon kept (the sessions from
		// its scan, the leases it restored).
		var got []json.RawMessage
		if err := statefile.Load(path, &got); err != nil {
			t.Errorf("%s: after the daemon stopped: %v", what, err)
		} else if c.file == "leases.json" && len(got) != c.kept {
			t.Errorf("%s: %d leases saved, want the %d kept", what, len(got), c.kept)
		}
	}
	for _, name := range []string{"sessions.json", "leases.json"} {
		recordFault(t, faultRow{
			Fault:    name + " torn or garbage",
			Produced: "a real daemon's file cut at 4 offsets, NUL-filled, or replaced by garbage; then a daemon started on it",
			Did: "started every time; one warning naming the file, the entries kept and the bytes dropped; whole entries before the damage restored (" +
				strings.Join(keptOf[name], ", ") + "); damaged bytes moved to " + name + ".damaged; a good file written again",
		})
	}
}

// entryEnds returns the offsets just after each entry of a state file's
// data array.
func entryEnds(t *testing.T, b []byte) []int {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var ends []int
	depth, inData := 0, false
	for {
		tok, err := dec.Token()
		if err != nil {
			return ends
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
			if inData && depth == 2 {
				ends = append(ends, int(dec.InputOffset()))
			}
		case "data":
			inData = depth == 1
		}
	}
}

// TestIntegrationStateDirLock: a second daemon and a `once` on a state dir
// a daemon holds exit 1 naming the daemon's PID; once it stops, `once`
// runs.
func TestIntegrationStateDirLock(t *testing.T) {
	if ranApart(t) {
		return
	}
	state := t.TempDir()
	d := startDaemon(t, "--max-age", "1h", "--state-dir", state)
	holder := fmt.Sprintf("PID %d", d.cmd.Process.Pid)
	under := strconv.Itoa(os.Getpid())
	_, errs, code := runBounded(t, 30*time.Second, "run", "--listen", "", "--under", under, "--state-dir", state)
	if code != 1 || !strings.Contains(errs, holder) {
		t.Errorf("second run: exit %d, %q; want 1 naming %s", code, errs, holder)
	}
	_, errs, code = runBounded(t, 30*time.Second, "once", "--under", under, "--state-dir", state)
	if code != 1 || !strings.Contains(errs, holder) {
		t.Errorf("once beside the daemon: exit %d, %q; want 1 naming %s", code, errs, holder)
	}
	d.stop(t)
	if _, errs, code = runBounded(t, 60*time.Second, "once", "--under", under, "--state-dir", state); code != 0 {
		t.Errorf("once after the daemon stopped: exit %d, %s", code, errs)
	}
}

// TestIntegrationNonUTF8Cmdline: an agent whose command line is not valid
// UTF-8 is killed, and its kill row arrives (sanitized), as does every
// snapshot after it.
func TestIntegrationNonUTF8Cmdline(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", db, "--host-id", "utf8-host")
	a := startAgent(t, "claude", "--", "resume-\xff\xfe-session")
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	if n := waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'", a.pid); n != 1 {
		t.Fatalf("%d kill rows for the agent, want 1", n)
	}
	var cmdline string
	conn.QueryRow(context.Background(), "SELECT cmdline FROM tel.agent_kills WHERE pid = $1", a.pid).Scan(&cmdline)
	if !strings.Contains(cmdline, "resume-\uFFFD-session") {
		t.Errorf("cmdline %q, want the bad bytes replaced", cmdline)
	}
	d.stop(t) // the last snapshot is flushed at shutdown
	snaps := len(d.findLogs(func(m map[string]any) bool { return m["msg"] == "snapshot" }))
	if n := waitCount(t, conn, 10*time.Second, snaps, "SELECT count(*) FROM tel.system_health WHERE host = 'utf8-host'"); n != snaps || snaps < 1 {
		t.Errorf("%d snapshots in the database, %d taken", n, snaps)
	}
	if bad := d.findLogs(func(m map[string]any) bool {
		return m["msg"] == "database refused a row: set aside in spool.bad, delivery goes on"
	}); len(bad) > 0 {
		t.Errorf("rows refused: %v", bad)
	}
}

// TestIntegrationLeastPrivilege: `supervisor migrate` as the owner, then
// `run` as a role with only USAGE on the schema and
// SELECT/INSERT/DELETE on the tables (no UPDATE): rows arrive and the daemon
// issues no DDL (an event trigger refuses any from that role, and the role
// has no CREATE anywhere). With a migration missing, the log says exactly
// that, once.
func TestIntegrationLeastPrivilege(t *testing.T) {
	if ranApart(t) {
		return
	}
	db, conn := testDB(t)
	ctx := context.Background()
	out, errs, code := runBounded(t, 60*time.Second, "migrate", "--database-url", db)
	if code != 0 || !strings.Contains(out, "schema tel is current") {
		t.Fatalf("migrate: exit %d, %s%s", code, out, errs)
	}
	role, pw, roleURL := daemonRole(t, conn, db)
	if _, err := conn.Exec(ctx, `CREATE FUNCTION public.sv_no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_user = '`+role+`' THEN
				RAISE EXCEPTION 'DDL by the daemon role: %', tg_tag;
			END IF;
		END $$;
		CREATE EVENT TRIGGER sv_no_ddl ON ddl_command_start EXECUTE FUNCTION public.sv_no_ddl()`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After the daemons (their cleanups run first), before the role
		// is dropped (daemonRole's cleanup runs after this one).
		dbConn(t, db).Exec(ctx, "DROP EVENT TRIGGER IF EXISTS sv_no_ddl")
	})
	var canCreate bool
	conn.QueryRow(ctx, "SELECT has_database_privilege($1, current_database(), 'CREATE') OR has_schema_privilege($1, 'tel', 'CREATE')", role).Scan(&canCreate)
	if canCreate {
		t.Fatal("the test role can create objects; the test would prove nothing")
	}

	d := startDaemon(t, "--max-age", maxAge.String(), "--database-url", roleURL, "--host-id", "lp-host")
	a := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	if n := waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'", a.pid); n != 1 {
		t.Fatalf("%d complete kill rows from the restricted role, want 1", n)
	}
	if n := waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.system_health WHERE host = 'lp-host'"); n < 1 {
		t.Fatal("no snapshot from the restricted role")
	}
	d.stop(t)
	for _, l := range d.findLogs(func(m map[string]any) bool { return m["level"] == "error" || m["level"] == "warn" }) {
		if s := fmt.Sprint(l); strings.Contains(s, "database") || strings.Contains(s, "DDL") || strings.Contains(s, "schema") {
			t.Errorf("restricted role, current schema: %s", s)
		}
	}

	// A migration missing: the role cannot apply it (insufficient
	// privilege: the event trigger, which proved no DDL was tried above,
	// would answer instead), and says so once.
	if _, err := conn.Exec(ctx, "DROP EVENT TRIGGER sv_no_ddl; DELETE FROM tel.supervisor_migrations"); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join("..", "internal", "store", "migrations", "*.sql"))
	var names []string // every embedded migration, in name order
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := "schema tel is not current (missing migrations " + strings.Join(names, ", ") + ") and this role cannot create it: run `supervisor migrate` with an owner role"
	d = startDaemon(t, "--max-age", "1h", "--database-url", roleURL, "--host-id", "lp-host")
	d.waitLog(t, 20*time.Second, func(m map[string]any) bool { return m["msg"] == want })
	// Retries at 1 s, 2 s, 4 s of backoff: two more attempts' worth, then
	// count. (An attempt that says nothing leaves no mark: a window.)
	time.Sleep(4 * time.Second)
	if n := len(d.findLogs(func(m map[string]any) bool { return m["msg"] == want })); n != 1 {
		t.Errorf("%d schema lines, want exactly 1", n)
	}
	if n := len(d.findLogs(msgHas("unreachable"))); n != 0 {
		t.Errorf("the schema problem was reported as an outage")
	}
	if strings.Contains(fmt.Sprint(d.findLogs(func(map[string]any) bool { return true })), pw) {
		t.Error("the password reached the log")
	}
	_, errs, code = runBounded(t, 60*time.Second, "migrate", "--database-url", roleURL)
	if code != 1 || !strings.Contains(errs, "this role cannot create it") || strings.Contains(errs, pw) {
		t.Errorf("migrate as the restricted role: exit %d, %s", code, errs)
	}
}
