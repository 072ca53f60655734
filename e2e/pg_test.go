package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// testDatabase creates an empty database for one test on the test server
// (testutil.Database: skipped without TEST_DATABASE_URL, failed under CI)
// and drops it afterwards.
func testDatabase(t testing.TB) string {
	t.Helper()
	return testutil.Database(t, "sv_test_")
}

// testDB is testDatabase with a connection to it, closed when the test
// ends: most tests that give the daemon a database read back what it wrote.
func testDB(t testing.TB) (string, *pgx.Conn) {
	t.Helper()
	db := testDatabase(t)
	return db, dbConn(t, db)
}

func dbConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// cluster is a private PostgreSQL server a test can stop and start, on a
// loopback TCP port with password authentication.
type cluster struct {
	bin, dir string
	port     int
	password string
}

func pgBin(t testing.TB) string {
	if b := os.Getenv("TEST_PG_BIN"); b != "" {
		return b
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		failOrSkip(t, "needs the PostgreSQL server binaries (initdb); run scripts/test, which installs the postgresql package")
	}
	return filepath.Dir(m[0])
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	needRoot(t)
	c := &cluster{bin: pgBin(t), password: testutil.RandName("pw")}
	dir, err := os.MkdirTemp("", "supervisor-pgc-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	c.port = freePort(t)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte(c.password+"\n"), 0o600)
	must(t, "chown", "-R", "postgres:", dir)
	must(t, "runuser", "-u", "postgres", "--", filepath.Join(c.bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pw)
	t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(dir, "data"),
			"-m", "immediate", "stop").Run()
		os.RemoveAll(dir)
	})
	c.start(t)
	return c
}

func (c *cluster) start(t testing.TB) {
	t.Helper()
	must(t, "runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.dir, "data"),
		"-l", filepath.Join(c.dir, "log"), "-w", "-o",
		fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s", c.port, c.dir), "start")
}

func (c *cluster) stop(t testing.TB) {
	t.Helper()
	must(t, "runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.dir, "data"),
		"-m", "fast", "-w", "stop")
}

// url connects over TCP with the password.
func (c *cluster) url(password string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", url.QueryEscape(password), c.port)
}

// daemonRole creates a login role with the grants docs/records.md gives
// the daemon's role on a migrated database db (conn is its owner's),
// dropped with what it owns when the test ends (after the daemons: their
// cleanups run first), and returns its name, its password and a URL of db
// as that role.
func daemonRole(t testing.TB, conn *pgx.Conn, db string) (role, pw, roleURL string) {
	t.Helper()
	role, pw = testutil.RandName("sv_role_"), testutil.RandName("pw")
	if _, err := conn.Exec(context.Background(), `CREATE ROLE `+role+` LOGIN PASSWORD '`+pw+`';
		GRANT USAGE ON SCHEMA tel TO `+role+`;
		GRANT SELECT, INSERT, DELETE ON tel.system_health, tel.agent_kills TO `+role+`;
		GRANT SELECT ON tel.supervisor_migrations TO `+role+`;
		GRANT USAGE ON SEQUENCE tel.system_health_id_seq TO `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := dbConn(t, db)
		c.Exec(context.Background(), "DROP OWNED BY "+role)
		c.Exec(context.Background(), "DROP ROLE "+role)
	})
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pw)
	return role, pw, u.String()
}

// lostKillRows waits (up to timeout for each) for every agent's one
// complete (not pending) kill row in conn's database and returns how many
// agents lack it, each named in an error saying when ("after the grant").
func lostKillRows(t testing.TB, conn *pgx.Conn, timeout time.Duration, agents []*agent, when string) int {
	t.Helper()
	lost := 0
	for _, a := range agents {
		if n := waitCount(t, conn, timeout, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'", a.pid); n != 1 {
			t.Errorf("agent %d: %d complete kill rows %s, want 1", a.pid, n, when)
			lost++
		}
	}
	return lost
}

// waitCount polls the database until query returns want rows or the
// timeout passes; it returns the count seen last.
// queryInt is the number the query returns now (a count); a failing query
// fails the test.
func queryInt(t testing.TB, conn *pgx.Conn, query string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func waitCount(t testing.TB, conn *pgx.Conn, timeout time.Duration, want int, query string, args ...any) int {
	t.Helper()
	end := time.Now().Add(timeout)
	var n int
	for {
		err := conn.QueryRow(context.Background(), query, args...).Scan(&n)
		if err == nil && n >= want {
			return n
		}
		if time.Now().After(end) {
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}
