package store

import (
	"context"
	"testing"
	"time"
)

// TestIntegrationRequestedBy: a manual kill's row carries requested_by
// (migration 003) through the spool to PostgreSQL; other rows leave it
// NULL; migration 003 run again changes nothing.
func TestIntegrationRequestedBy(t *testing.T) {
	db := testDB(t)
	ctx := context.Background()
	pool := testPool(t, db)
	pg := NewPostgres(pool)
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, 100)
	defer sp.Close()
	st := New(Config{Spool: sp, Postgres: pg, Host: "h"})
	manual := killRec("", 601, "killed", "claude")
	manual.Reason, manual.RequestedBy = "manual", "uid 0 pid 4321"
	a, _ := st.Add(KindKill, time.Now(), nil, manual)
	b, _ := st.Add(KindKill, time.Now(), nil, killRec("", 602, "killed", "claude"))
	// The spool line holds it too: a row still spooled at a restart keeps it.
	recs, _, err := ReadSpool(dir)
	if err != nil || len(recs) != 2 || recs[0].Kill.RequestedBy != "uid 0 pid 4321" || recs[1].Kill.RequestedBy != "" {
		t.Fatalf("spooled: %+v %v", recs, err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]*string{a.ID: &manual.RequestedBy, b.ID: nil} {
		var reason string
		var by *string
		if err := pool.QueryRow(ctx, "SELECT reason, requested_by FROM tel.agent_kills WHERE id = $1", id).Scan(&reason, &by); err != nil {
			t.Fatal(err)
		}
		if (want == nil) != (by == nil) || (want != nil && *by != *want) {
			t.Errorf("row %s: reason %s requested_by %v, want %v", id, reason, deref(by), deref(want))
		}
	}
	sql, _ := migrations.ReadFile("migrations/003_requested_by.sql")
	if _, err := pool.Exec(ctx, string(sql)); err != nil {
		t.Errorf("003 a second time: %v", err)
	}
}
