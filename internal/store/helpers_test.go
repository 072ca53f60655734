package store

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// restrictedRole creates a login role on db's server that owner grants
// only grants (each "privileges ON objects"), dropped with what it owns
// when the test ends, and returns a pool connected to db as that role.
func restrictedRole(t *testing.T, owner *pgxpool.Pool, db string, grants ...string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	role := testutil.RandName("sv_role_")
	sql := []string{"CREATE ROLE " + role + " LOGIN PASSWORD 'pw'"}
	for _, g := range grants {
		sql = append(sql, "GRANT "+g+" TO "+role)
	}
	if _, err := owner.Exec(ctx, strings.Join(sql, ";\n")); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "pw")
	restricted := testPool(t, u.String())
	t.Cleanup(func() {
		restricted.Close()
		owner.Exec(ctx, "DROP OWNED BY "+role)
		owner.Exec(ctx, "DROP ROLE "+role)
	})
	return restricted
}

// migratedWithWriter migrates a fresh test database as its owner and
// returns the owner's pool and a pool for a role that may read, insert and
// delete in schema tel but not change it (the daemon's role).
func migratedWithWriter(t *testing.T) (owner, writer *pgxpool.Pool) {
	t.Helper()
	db := testDB(t)
	owner = testPool(t, db)
	if err := NewPostgres(owner).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	writer = restrictedRole(t, owner, db, "USAGE ON SCHEMA tel",
		"SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA tel", "USAGE ON ALL SEQUENCES IN SCHEMA tel")
	return owner, writer
}

// openSpool opens the spool in dir with bound max, closed when the test
// ends.
func openSpool(t testing.TB, dir string, max int) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// spooled is a Store configured as cfg says, whose rows go through a new
// spool of 100 rows in dir; the spool is closed when the test ends.
func spooled(t *testing.T, dir string, cfg Config) (*Store, *Spool) {
	t.Helper()
	sp := openSpool(t, dir, 100)
	cfg.Spool = sp
	return New(cfg), sp
}

// migrateAgain runs the SQL of migration file a second time, as a second
// migrating host racing past the check would: it must change nothing, so
// it must not fail.
func migrateAgain(t *testing.T, pool *pgxpool.Pool, file string) {
	t.Helper()
	sql, _ := migrations.ReadFile("migrations/" + file)
	if _, err := pool.Exec(context.Background(), string(sql)); err != nil {
		t.Errorf("%s a second time: %v", file[:3], err)
	}
}

// dbStore is a Store for host "h" whose rows go through a new spool to a
// new, empty database.
func dbStore(t *testing.T) (*Store, *Spool, *Postgres) {
	t.Helper()
	pg := NewPostgres(testPool(t, testDB(t)))
	st, sp := spooled(t, t.TempDir(), Config{Postgres: pg, Host: "h"})
	return st, sp, pg
}

// flush delivers what st holds; the test fails if it cannot.
func flush(t *testing.T, st *Store) {
	t.Helper()
	if err := st.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}
