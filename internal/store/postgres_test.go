package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// testDB creates an empty database on the server at TEST_DATABASE_URL for
// one test and drops it afterwards; it returns its URL. Without the
// variable the test skips, and fails under CI (scripts/test provides a
// server).
func testDB(t *testing.T) string {
	t.Helper()
	return testutil.Database(t, "sv_store_")
}

func testPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func killRec(id string, pid int32, outcome, cmdline string) *KillRow {
	now := time.Now().UTC()
	return &KillRow{PID: pid, Comm: "claude", Cmdline: cmdline, Rule: "claude", StartedAt: now.Add(-time.Hour),
		Deadline: now, SignalledAt: now, Outcome: outcome, FinalSignal: "TERM", Descendants: []int32{pid + 1}}
}

func snapRow() *SnapshotRow {
	return &SnapshotRow{CheckType: CheckType, Status: "ok", Details: []byte(`{"zombie_count":0}`)}
}

// TestIntegrationPendingKillReplaced: the complete row replaces a pending
// one whether the pending one was delivered or not, and a replayed pending
// row never undoes a complete one.
func TestIntegrationPendingKillReplaced(t *testing.T) {
	ctx := context.Background()
	st, sp, pg := dbStore(t)
	now := time.Now()
	outcome := func(id string) string {
		t.Helper()
		var o string
		if err := pg.pool.QueryRow(ctx, "SELECT outcome FROM tel.agent_kills WHERE id = $1", id).Scan(&o); err != nil {
			t.Fatal(err)
		}
		return o
	}

	// Delivered pending, then complete.
	a, _ := st.Add(KindKill, now, nil, killRec("", 100, OutcomePending, "claude"))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if o := outcome(a.ID); o != OutcomePending {
		t.Fatalf("outcome %q, want pending", o)
	}
	if _, err := st.Replace(a.ID, KindKill, now, nil, killRec("", 100, "killed", "claude")); err != nil {
		t.Fatal(err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if o := outcome(a.ID); o != "killed" {
		t.Fatalf("outcome %q after the complete row, want killed", o)
	}
	// A replay of the pending row (a crash between commit and ack).
	replay := a
	if err := pg.Insert(ctx, []Record{replay}); err != nil {
		t.Fatal(err)
	}
	if o := outcome(a.ID); o != "killed" {
		t.Fatalf("outcome %q after replaying the pending row, want killed", o)
	}

	// Undelivered pending, superseded in the spool: only the complete one goes.
	b, _ := st.Add(KindKill, now, nil, killRec("", 200, OutcomePending, "claude"))
	st.Replace(b.ID, KindKill, now, nil, killRec("", 200, "terminated", "claude"))
	if sp.Len() != 1 {
		t.Fatalf("%d spooled, want 1", sp.Len())
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if o := outcome(b.ID); o != "terminated" {
		t.Fatalf("outcome %q, want terminated", o)
	}
}

// TestIntegrationRefusedRowSetAside: a kill row whose command line is not
// UTF-8 and holds NUL bytes arrives, sanitized, as do the snapshots after
// it; a row PostgreSQL refuses (a CHECK constraint this test adds) goes to
// spool.bad with its error, logged once, and every row after it arrives.
func TestIntegrationRefusedRowSetAside(t *testing.T) {
	db := testDB(t)
	ctx := context.Background()
	pool := testPool(t, db)
	pg := NewPostgres(pool)
	if err := pg.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE tel.agent_kills ADD CONSTRAINT test_refuse CHECK (pid <> 4242)`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	st, sp := spooled(t, dir, Config{Postgres: pg, Host: "h", Log: zap.New(core)})
	now := time.Now()
	raw := "claude --resume \xff\xfe\x00\x00tail" + strings.Repeat("x", 5000)
	k, err := st.Add(KindKill, now, nil, killRec("", 77, "killed", raw))
	if err != nil {
		t.Fatal(err)
	}
	st.Add(KindSnapshot, now, snapRow(), nil)
	bad1, _ := st.Add(KindKill, now, nil, killRec("", 4242, "killed", "claude"))
	st.Add(KindSnapshot, now, snapRow(), nil)
	bad2, _ := st.Add(KindKill, now, nil, killRec("", 4242, "terminated", "claude"))
	last, _ := st.Add(KindKill, now, nil, killRec("", 78, "killed", "claude"))
	if err := st.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if sp.Len() != 0 || sp.Bad() != 2 {
		t.Fatalf("%d left in the spool, %d set aside; want 0, 2", sp.Len(), sp.Bad())
	}
	var cmdline string
	if err := pool.QueryRow(ctx, "SELECT cmdline FROM tel.agent_kills WHERE id = $1", k.ID).Scan(&cmdline); err != nil {
		t.Fatalf("the non-UTF-8 kill row did not arrive: %v", err)
	}
	if cmdline != k.Kill.Cmdline || len(cmdline) != MaxCmdline || !strings.HasPrefix(cmdline, "claude --resume \uFFFDtail") {
		t.Errorf("cmdline arrived as %q... (%d bytes), spooled as %d bytes", cmdline[:30], len(cmdline), len(k.Kill.Cmdline))
	}
	var n int
	pool.QueryRow(ctx, "SELECT count(*) FROM tel.system_health WHERE host = 'h'").Scan(&n)
	if n != 2 {
		t.Errorf("%d snapshots arrived, want 2", n)
	}
	pool.QueryRow(ctx, "SELECT count(*) FROM tel.agent_kills WHERE id = $1", last.ID).Scan(&n)
	if n != 1 {
		t.Errorf("the kill after the refused ones did not arrive")
	}
	setAside, _ := os.ReadFile(filepath.Join(dir, badFile))
	for _, r := range []Record{bad1, bad2} {
		if !bytes.Contains(setAside, []byte(r.ID)) {
			t.Errorf("spool.bad lacks refused row %s", r.ID)
		}
	}
	if !bytes.Contains(setAside, []byte("test_refuse")) {
		t.Errorf("spool.bad does not say why:\n%s", setAside)
	}
	if got := logs.FilterMessageSnippet("database refused a row").Len(); got != 1 {
		t.Errorf("%d refusal log lines for one distinct error, want 1", got)
	}
}

// TestIntegrationOutageKeepsRows: a connection error is no refusal:
// nothing is set aside, everything stays spooled.
func TestIntegrationOutageKeepsRows(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://nobody:secretpw@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st, sp := spooled(t, t.TempDir(), Config{Postgres: NewPostgres(pool), Host: "h", Secret: "secretpw"})
	st.Add(KindSnapshot, time.Now(), snapRow(), nil)
	err = st.Flush(context.Background())
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("flush: %v", err)
	}
	if sp.Len() != 1 || sp.Bad() != 0 {
		t.Errorf("%d spooled, %d set aside; want 1, 0", sp.Len(), sp.Bad())
	}
}

// TestIntegrationMigrateChecksFirst: with the schema current, a role with
// no DDL rights migrates fine (nothing to do, nothing tried); with a
// migration missing it gets a SchemaError naming it.
func TestIntegrationMigrateChecksFirst(t *testing.T) {
	ctx := context.Background()
	owner, restricted := migratedWithWriter(t)
	if err := NewPostgres(restricted).Migrate(ctx); err != nil {
		t.Fatalf("restricted role, current schema: %v", err)
	}
	if _, err := owner.Exec(ctx, "DELETE FROM tel.supervisor_migrations"); err != nil {
		t.Fatal(err)
	}
	all, err := embedded()
	if err != nil {
		t.Fatal(err)
	}
	var names []string // every migration, in order: 001_tel.sql, 002_sessions.sql, ...
	for _, m := range all {
		names = append(names, m.name)
	}
	err = NewPostgres(restricted).Migrate(ctx)
	var se *SchemaError
	if !errors.As(err, &se) || strings.Join(se.Missing, ",") != strings.Join(names, ",") || se.Missing[0] != "001_tel.sql" {
		t.Fatalf("restricted role, schema not current: %v, want a SchemaError naming %v", err, names)
	}
	if !strings.Contains(err.Error(), "schema tel is not current (missing migrations "+strings.Join(names, ", ")+") and this role cannot create it") {
		t.Errorf("message: %v", err)
	}
}

// TestPermanentOnlyTheRowsFault: only data errors (classes 22 and 23) set
// a row aside; privilege, missing table, connection, read-only,
// timeout and resource errors are outages, each named with its cure.
func TestPermanentOnlyTheRowsFault(t *testing.T) {
	for code, want := range map[string]bool{
		"22021": true, "22P02": true, "23505": true, "23514": true,
		"42501": false, "42P01": false, "08006": false, "25006": false, "57014": false, "53100": false, "57P01": false, "40001": false,
	} {
		if got := Permanent(&RowError{Err: &pgconn.PgError{Code: code}}); got != want {
			t.Errorf("Permanent(%s) = %v, want %v", code, got, want)
		}
	}
	for code, want := range map[string]string{
		"42501": "permission denied on tel.agent_kills: GRANT INSERT, SELECT, DELETE ON tel.agent_kills TO sv",
		"42P01": "table missing on tel.agent_kills: run `supervisor migrate`",
		"25006": "the database is read-only on tel.agent_kills",
		"57014": "statement timeout on tel.agent_kills",
		"53100": "the database is out of resources on tel.agent_kills",
		"57P01": "database unreachable",
		"28P01": "database unreachable",
	} {
		if _, cause := Outage(&pgconn.PgError{Code: code}, "tel.agent_kills", "sv"); !strings.HasPrefix(cause, want) {
			t.Errorf("Outage(%s) = %q, want %q…", code, cause, want)
		}
	}
}

// TestIntegrationRevokedGrantIsAnOutage: INSERT revoked on tel.agent_kills
// is not the row's fault: the row stays in the spool (nothing in
// spool.bad), one warning names the GRANT, and once granted again it is
// delivered.
func TestIntegrationRevokedGrantIsAnOutage(t *testing.T) {
	ctx := context.Background()
	owner, restricted := migratedWithWriter(t)
	role := restricted.Config().ConnConfig.User
	core, logs := observer.New(zap.WarnLevel)
	st, sp := spooled(t, t.TempDir(), Config{Postgres: NewPostgres(restricted), Host: "h", Role: role, Log: zap.New(core)})
	if _, err := owner.Exec(ctx, "REVOKE INSERT ON tel.agent_kills FROM "+role); err != nil {
		t.Fatal(err)
	}
	r, err := st.Add(KindKill, time.Now(), nil, killRec("", 4343, "killed", "claude"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := st.deliver(ctx); err == nil {
			t.Fatal("delivered without INSERT")
		} else {
			st.down(err)
		}
	}
	if sp.Len() != 1 || sp.Bad() != 0 {
		t.Fatalf("after the refusals: %d rows spooled, %d set aside; want 1, 0", sp.Len(), sp.Bad())
	}
	want := "permission denied on tel.agent_kills: GRANT INSERT, SELECT, DELETE ON tel.agent_kills TO " + role
	if n := logs.FilterMessageSnippet(want).Len(); n != 1 {
		t.Errorf("%d warnings %q, want 1 (all: %v)", n, want, logs.All())
	}
	if f := st.Faults(); len(f) != 1 || !strings.Contains(f[0], want) {
		t.Errorf("faults %q, want the grant named", f)
	}
	if _, err := owner.Exec(ctx, "GRANT INSERT ON tel.agent_kills TO "+role); err != nil {
		t.Fatal(err)
	}
	flush(t, st)
	var n int
	owner.QueryRow(ctx, "SELECT count(*) FROM tel.agent_kills WHERE id = $1", r.ID).Scan(&n)
	if n != 1 || sp.Len() != 0 || len(st.Faults()) != 0 {
		t.Errorf("after the grant: %d rows in the table, %d spooled, faults %q; want 1, 0, none", n, sp.Len(), st.Faults())
	}
}
