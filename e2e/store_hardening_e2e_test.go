package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// runBounded runs the supervisor binary and returns its stdout, stderr and
// exit code; it fails the test if the command is still running after
// timeout (a `run` that should have refused to start).
func runBounded(t *testing.T, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, supervisorBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("supervisor %v still running after %s\nstderr: %s", args, timeout, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
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
	warn := d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "spool: damaged lines set aside")
	})
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
	role, pw := testutil.RandName("sv_role_"), testutil.RandName("pw")
	if _, err := conn.Exec(ctx, `CREATE ROLE `+role+` LOGIN PASSWORD '`+pw+`';
		GRANT USAGE ON SCHEMA tel TO `+role+`;
		GRANT SELECT, INSERT, DELETE ON tel.system_health, tel.agent_kills TO `+role+`;
		GRANT SELECT ON tel.supervisor_migrations TO `+role+`;
		GRANT USAGE ON SEQUENCE tel.system_health_id_seq TO `+role+`;
		CREATE FUNCTION public.sv_no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_user = '`+role+`' THEN
				RAISE EXCEPTION 'DDL by the daemon role: %', tg_tag;
			END IF;
		END $$;
		CREATE EVENT TRIGGER sv_no_ddl ON ddl_command_start EXECUTE FUNCTION public.sv_no_ddl()`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After the daemons (their cleanups run first): the role's grants
		// live in this database, dropped after this.
		c := dbConn(t, db)
		c.Exec(ctx, "DROP EVENT TRIGGER IF EXISTS sv_no_ddl; DROP OWNED BY "+role)
		c.Exec(ctx, "DROP ROLE "+role)
	})
	var canCreate bool
	conn.QueryRow(ctx, "SELECT has_database_privilege($1, current_database(), 'CREATE') OR has_schema_privilege($1, 'tel', 'CREATE')", role).Scan(&canCreate)
	if canCreate {
		t.Fatal("the test role can create objects; the test would prove nothing")
	}
	u, _ := url.Parse(db)
	u.User = url.UserPassword(role, pw)
	roleURL := u.String()

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
	if n := len(d.findLogs(func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m["msg"]), "unreachable") })); n != 0 {
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
