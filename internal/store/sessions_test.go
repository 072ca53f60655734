package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateTo001 gives db the schema an earlier version left: migration 001
// only, recorded as applied.
func migrateTo001(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	sql, err := migrations.ReadFile("migrations/001_tel.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(sql)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE tel.supervisor_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO tel.supervisor_migrations (version, name) VALUES (1, '001_tel.sql')`); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationMigration002OldRows: on a database an earlier version
// wrote (001 applied, kill rows without reason), migration 002 gives the
// old rows reason max_age and no session, records itself, adds the index,
// and running its SQL again changes nothing. A role without DDL rights
// is told exactly which migration is missing, and works once an owner
// migrated.
func TestIntegrationMigration002OldRows(t *testing.T) {
	db := testDB(t)
	ctx := context.Background()
	owner := testPool(t, db)
	migrateTo001(t, owner)
	now := time.Now().UTC()
	// As the previous version inserted them: no reason, no session.
	for _, pid := range []int{100, 101} {
		if _, err := owner.Exec(ctx, `INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
				signalled_at, lateness_ms, final_signal, outcome, descendants, dry_run, created_at)
				VALUES ($1, 'old', $2, 'claude', 'claude', 'claude', $3, $3, $3, 0.1, 'TERM', 'terminated', '{}', false, $3)`,
			NewID(), pid, now); err != nil {
			t.Fatal(err)
		}
	}

	// A role that may not migrate, before the owner did.
	restricted := restrictedRole(t, owner, db, "USAGE ON SCHEMA tel", "SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA tel")
	// Every migration after 001 is missing: 002 and the later ones.
	all, err := embedded()
	if err != nil {
		t.Fatal(err)
	}
	var later []string
	for _, m := range all[1:] {
		later = append(later, m.name)
	}
	err = NewPostgres(restricted).Migrate(ctx)
	var se *SchemaError
	if !errors.As(err, &se) || fmt.Sprint(se.Missing) != fmt.Sprint(later) || se.Missing[0] != "002_sessions.sql" {
		t.Fatalf("restricted role, 002 missing: %v, want a SchemaError naming 002_sessions.sql and the later ones only (%v)", err, later)
	}

	if err := NewPostgres(owner).Migrate(ctx); err != nil {
		t.Fatalf("migrate 001 -> 002: %v", err)
	}
	var n, maxAge, noSession int
	owner.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE reason = 'max_age'),
		count(*) FILTER (WHERE session_pid IS NULL AND session_started_at IS NULL) FROM tel.agent_kills`).Scan(&n, &maxAge, &noSession)
	if n != 2 || maxAge != 2 || noSession != 2 {
		t.Errorf("old rows: %d, %d with reason max_age, %d without a session; want 2, 2, 2", n, maxAge, noSession)
	}
	var versions string
	owner.QueryRow(ctx, "SELECT string_agg(name, ',' ORDER BY version) FROM tel.supervisor_migrations").Scan(&versions)
	if versions != "001_tel.sql,"+strings.Join(later, ",") {
		t.Errorf("migrations recorded: %q", versions)
	}
	var index string
	owner.QueryRow(ctx, `SELECT coalesce(to_regclass('tel.agent_kills_reason_host_signalled')::text, '')`).Scan(&index)
	if index == "" {
		t.Error("no index on (reason, host, signalled_at)")
	}
	// Idempotent: the SQL again, as a second migrating host racing past the
	// check would run it.
	migrateAgain(t, owner, "002_sessions.sql")

	// The restricted role now sees a current schema and writes new rows.
	pg := NewPostgres(restricted)
	if err := pg.Migrate(ctx); err != nil {
		t.Fatalf("restricted role after migrate: %v", err)
	}
	st, _ := spooled(t, t.TempDir(), Config{Postgres: pg, Host: "new"})
	k := killRec("", 300, "killed", "node server.js")
	k.Reason = "leftover"
	rec, _ := st.Add(KindKill, now, nil, k)
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var reason string
	owner.QueryRow(ctx, "SELECT reason FROM tel.agent_kills WHERE id = $1", rec.ID).Scan(&reason)
	if reason != "leftover" {
		t.Errorf("new row from the restricted role: reason %q", reason)
	}
}

// TestIntegrationLeftoverRowRoundTrip: a leftover's kill row keeps its
// reason and session through pending and complete, delivered or not, and a
// replayed pending row undoes neither; a kill with no reason is max_age.
func TestIntegrationLeftoverRowRoundTrip(t *testing.T) {
	ctx := context.Background()
	st, _, pg := dbStore(t)
	now := time.Now()
	agentStart := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC) // microseconds: timestamptz's resolution
	leftover := func(pid int32, outcome string) *KillRow {
		k := killRec("", pid, outcome, "next dev")
		k.Reason = "leftover"
		spid := int32(4000)
		k.SessionPID, k.SessionStartedAt = &spid, &agentStart
		return k
	}
	type row struct {
		reason, outcome string
		spid            *int32
		sstart          *time.Time
	}
	read := func(id string) row {
		t.Helper()
		var r row
		if err := pg.pool.QueryRow(ctx, "SELECT reason, outcome, session_pid, session_started_at FROM tel.agent_kills WHERE id = $1", id).
			Scan(&r.reason, &r.outcome, &r.spid, &r.sstart); err != nil {
			t.Fatalf("row %s: %v", id, err)
		}
		return r
	}
	check := func(what string, got row, outcome string) {
		t.Helper()
		if got.reason != "leftover" || got.outcome != outcome || got.spid == nil || *got.spid != 4000 ||
			got.sstart == nil || !got.sstart.Equal(agentStart) {
			t.Errorf("%s: reason %q outcome %q session %v %v; want leftover %s session 4000 %v",
				what, got.reason, got.outcome, deref(got.spid), deref(got.sstart), outcome, agentStart)
		}
	}

	// Pending delivered, then complete, then the pending replayed.
	a, _ := st.Add(KindKill, now, nil, leftover(501, OutcomePending))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("pending", read(a.ID), OutcomePending)
	st.Replace(a.ID, KindKill, now, nil, leftover(501, "killed"))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("complete", read(a.ID), "killed")
	if err := pg.Insert(ctx, []Record{a}); err != nil {
		t.Fatal(err)
	}
	check("pending replayed", read(a.ID), "killed")

	// Pending superseded in the spool before delivery.
	b, _ := st.Add(KindKill, now, nil, leftover(502, OutcomePending))
	st.Replace(b.ID, KindKill, now, nil, leftover(502, "terminated"))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("complete, pending never delivered", read(b.ID), "terminated")

	// The complete row writes reason and session even where the pending
	// one said otherwise: the upsert sets every column, these included.
	d, _ := st.Add(KindKill, now, nil, killRec("", 505, OutcomePending, "next dev"))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st.Replace(d.ID, KindKill, now, nil, leftover(505, "killed"))
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("complete over a pending row without session", read(d.ID), "killed")

	// No reason given, no session: max_age, NULLs.
	c, _ := st.Add(KindKill, now, nil, killRec("", 503, "killed", "claude"))
	if c.Kill.Reason != DefaultReason {
		t.Errorf("spooled reason %q, want %s", c.Kill.Reason, DefaultReason)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var reason string
	var spid *int32
	pg.pool.QueryRow(ctx, "SELECT reason, session_pid FROM tel.agent_kills WHERE id = $1", c.ID).Scan(&reason, &spid)
	if reason != "max_age" || spid != nil {
		t.Errorf("kill without reason or session: %q %v", reason, deref(spid))
	}
	// Straight to Insert, past sanitize: the database still gets max_age.
	raw := Record{Seq: 99, Kind: KindKill, ID: NewID(), Host: "h", Created: now, Kill: killRec("", 504, "killed", "claude")}
	if err := pg.Insert(ctx, []Record{raw}); err != nil {
		t.Fatal(err)
	}
	pg.pool.QueryRow(ctx, "SELECT reason FROM tel.agent_kills WHERE id = $1", raw.ID).Scan(&reason)
	if reason != "max_age" {
		t.Errorf("Insert of a row without reason: %q", reason)
	}
}

// oldKillLine is a kill row as the spool of the version before sessions
// wrote it: no reason, no session.
const oldKillLine = `{"seq":1,"kind":"kill","id":"6f1c1e0e-7a0a-4b8e-9d0a-2b3c4d5e6f70","host":"old","created_at":"2025-03-01T12:00:00Z",` +
	`"kill":{"pid":4242,"comm":"claude","cmdline":"claude --resume","rule":"claude","started_at":"2025-03-01T10:00:00Z",` +
	`"deadline":"2025-03-01T12:00:00Z","signalled_at":"2025-03-01T12:00:00.0001Z","exited_at":"2025-03-01T12:00:00.2Z",` +
	`"lateness_ms":0.1,"final_signal":"TERM","outcome":"terminated","descendants":[4243],"dry_run":false}}` + "\n"

// TestOldSpoolLineReadsAsMaxAge: a spooled kill from before reasons
// existed reads back with reason max_age, from the daemon's spool and from
// ReadSpool (history).
func TestOldSpoolLineReadsAsMaxAge(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, spoolFile), []byte(oldKillLine), 0o600); err != nil {
		t.Fatal(err)
	}
	recs, bad, err := ReadSpool(dir)
	if err != nil || bad != 0 || len(recs) != 1 || recs[0].Kill.Reason != DefaultReason || recs[0].Kill.SessionPID != nil {
		t.Fatalf("ReadSpool: %d records, %d bad, %v: %+v", len(recs), bad, err, recs)
	}
	sp, err := OpenSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if got := sp.Records(); len(got) != 1 || got[0].Kill.Reason != DefaultReason {
		t.Fatalf("spool: %+v", got)
	}
}

// TestIntegrationOldSpoolLineDelivers: that line, left by an older daemon
// in an outage, arrives in PostgreSQL as a max_age kill.
func TestIntegrationOldSpoolLineDelivers(t *testing.T) {
	db := testDB(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, spoolFile), []byte(oldKillLine), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := NewPostgres(testPool(t, db))
	st, sp := spooled(t, dir, Config{Postgres: pg, Host: "new"})
	if err := st.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if sp.Len() != 0 || sp.Bad() != 0 {
		t.Fatalf("%d left, %d set aside", sp.Len(), sp.Bad())
	}
	var reason, host string
	var pid int32
	var spid *int32
	if err := pg.pool.QueryRow(ctx, "SELECT reason, host, pid, session_pid FROM tel.agent_kills WHERE id = '6f1c1e0e-7a0a-4b8e-9d0a-2b3c4d5e6f70'").
		Scan(&reason, &host, &pid, &spid); err != nil {
		t.Fatalf("the old line did not arrive: %v", err)
	}
	if reason != "max_age" || host != "old" || pid != 4242 || spid != nil {
		t.Errorf("arrived as reason %q host %q pid %d session %v", reason, host, pid, deref(spid))
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
