package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// PostgresURL returns TEST_DATABASE_URL. Without it the test skips, and
// fails under CI (scripts/test sets it, starting a private server when it
// is not given).
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must provide PostgreSQL: TEST_DATABASE_URL is not set (scripts/test sets it)")
		}
		t.Skip("skipped: needs PostgreSQL; set TEST_DATABASE_URL or run scripts/test, which starts a private server")
	}
	return u
}

// Database creates an empty database on the test server for one test (or
// benchmark), named prefix and a random suffix so that tests running at
// once never meet, drops it when the test ends and returns its URL.
func Database(t testing.TB, prefix string) string {
	t.Helper()
	base := PostgresURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to TEST_DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	name := RandName(prefix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// RandName is prefix and 12 random hex digits: a name for a database or
// role that no other test uses.
func RandName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// SeedTable is the tel.system_health the seed job's users created (before
// this daemon: created_at without time zone, varchar status, no host),
// which migrations must take over.
const SeedTable = `CREATE SCHEMA tel;
	CREATE TABLE tel.system_health (
		id SERIAL PRIMARY KEY,
		check_type VARCHAR(50) NOT NULL,
		status VARCHAR(20) NOT NULL,
		details JSONB,
		action_taken TEXT,
		created_at TIMESTAMP DEFAULT NOW())`
