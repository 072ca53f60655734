package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// TestIntegrationFleetView: tel.fleet has one row per host, from its newest
// health row; a host is silent after three of its own summary intervals
// (300 s where its row does not say), or with no health row at all; kills
// of the last 24 h are counted by reason, dry runs and older kills not; the
// seed's rows without host are left out; odd details do not break it.
func TestIntegrationFleetView(t *testing.T) {
	db := testDB(t)
	pool := testPool(t, db)
	ctx := context.Background()
	if err := NewPostgres(pool).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// The migration may run again (CREATE OR REPLACE): nothing changes.
	sql, _ := migrations.ReadFile("migrations/006_fleet.sql")
	if _, err := pool.Exec(ctx, string(sql)); err != nil {
		t.Fatalf("006 again: %v", err)
	}
	snap := func(host any, ago time.Duration, status, details string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO tel.system_health (check_type, status, details, host, created_at)
			VALUES ('process_reaper', $1, $2::jsonb, $3, now() - $4::interval)`, status, details, host, ago.String()); err != nil {
			t.Fatal(err)
		}
	}
	killOutcome := func(host, reason string, ago time.Duration, dry bool, outcome string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
			signalled_at, lateness_ms, outcome, descendants, dry_run, reason)
			VALUES (gen_random_uuid(), $1, 42, 'claude', 'claude', 'claude', now() - interval '3 hours', now() - $2::interval,
			now() - $2::interval, 0.1, $5, '{}', $3, $4)`, host, ago.String(), dry, reason, outcome); err != nil {
			t.Fatal(err)
		}
	}
	kill := func(host, reason string, ago time.Duration, dry bool) {
		t.Helper()
		killOutcome(host, reason, ago, dry, "terminated")
	}
	// live: says 60 s, last row 10 s ago; an older row with other numbers.
	snap("live", time.Hour, "warning", `{"summary_interval_s": 60, "agents_tracked": 9, "zombie_count": 900, "free_mem_mb": 1}`)
	snap("live", 10*time.Second, "ok", `{"summary_interval_s": 60, "agents_tracked": 3, "zombie_count": 2, "free_mem_mb": 2048}`)
	// quiet: says 1 s, last row 10 s ago.
	snap("quiet", 10*time.Second, "ok", `{"summary_interval_s": 1, "agents_tracked": 0, "zombie_count": 0, "free_mem_mb": 512}`)
	// Rows of a daemon before summary_interval_s: 300 s assumed.
	snap("older-daemon", 4*time.Minute, "ok", `{"agents_tracked": 1, "zombie_count": 0, "free_mem_mb": 100}`)
	snap("older-quiet", 20*time.Minute, "ok", `{"agents_tracked": 1, "zombie_count": 0, "free_mem_mb": 100}`)
	// Odd values: strings where numbers belong, an interval of 0.
	snap("odd", time.Minute, "ok", `{"summary_interval_s": "abc", "agents_tracked": "x", "zombie_count": null, "free_mem_mb": 7.6}`)
	snap("zero", time.Minute, "ok", `{"summary_interval_s": 0}`)
	// The seed's rows: no host.
	snap(nil, time.Second, "ok", `{"zombie_count": 1, "free_mem_mb": 1}`)
	kill("live", "max_age", time.Hour, false)
	kill("live", "max_age", 23*time.Hour, false)
	kill("live", "leftover", time.Minute, false)
	kill("live", "max_age", 25*time.Hour, false) // older than a day
	kill("live", "manual", time.Minute, true)    // a dry run kills nothing
	// Rows that signalled nothing: refused by the guard, gone before the signal.
	killOutcome("live", "manual", time.Minute, false, "refused")
	killOutcome("live", "max_age", time.Minute, false, "already_gone")
	kill("kills-only", "manual", time.Minute, false)

	type row struct {
		Host          string
		Last          *time.Time
		Status        *string
		Silent        bool
		Agents        *int64
		Zombies       *int64
		FreeMB        *int64
		Kills         map[string]int
		lastSnapshotS float64
	}
	rows, err := pool.Query(ctx, `SELECT host, last_snapshot, status, silent, agents, zombies, free_mem_mb, kills_24h,
		coalesce(extract(epoch FROM now() - last_snapshot), -1) FROM tel.fleet`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]row{}
	var order []string
	for rows.Next() {
		var r row
		var kills []byte
		if err := rows.Scan(&r.Host, &r.Last, &r.Status, &r.Silent, &r.Agents, &r.Zombies, &r.FreeMB, &kills, &r.lastSnapshotS); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(kills, &r.Kills); err != nil {
			t.Fatalf("kills_24h %s: %v", kills, err)
		}
		got[r.Host] = r
		order = append(order, r.Host)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"kills-only", "live", "odd", "older-daemon", "older-quiet", "quiet", "zero"}
	if len(order) != len(want) {
		t.Fatalf("hosts %q, want %q (no row for the seed's NULL host)", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("hosts %q, want %q in order", order, want)
		}
	}
	silent := map[string]bool{"kills-only": true, "live": false, "odd": false, "older-daemon": false, "older-quiet": true,
		"quiet": true, "zero": false}
	for h, s := range silent {
		if got[h].Silent != s {
			t.Errorf("%s: silent %v, want %v (%+v)", h, got[h].Silent, s, got[h])
		}
	}
	l := got["live"]
	if l.Status == nil || *l.Status != "ok" || deref(l.Agents) != int64(3) || deref(l.Zombies) != int64(2) || deref(l.FreeMB) != int64(2048) {
		t.Errorf("live: not its newest row: status %v agents %v zombies %v free %v", deref(l.Status), deref(l.Agents), deref(l.Zombies), deref(l.FreeMB))
	}
	if l.lastSnapshotS < 9 || l.lastSnapshotS > 60 {
		t.Errorf("live: last snapshot %.1f s ago, want about 10", l.lastSnapshotS)
	}
	if len(l.Kills) != 2 || l.Kills["max_age"] != 2 || l.Kills["leftover"] != 1 {
		t.Errorf("live: kills_24h %v, want max_age 2, leftover 1", l.Kills)
	}
	if q := got["quiet"]; q.Kills == nil || len(q.Kills) != 0 {
		t.Errorf("quiet: kills_24h %v, want {}", q.Kills)
	}
	if o := got["odd"]; o.Agents != nil || o.Zombies != nil || deref(o.FreeMB) != int64(8) {
		t.Errorf("odd: agents %v zombies %v free %v, want null, null, 8", deref(o.Agents), deref(o.Zombies), deref(o.FreeMB))
	}
	if k := got["kills-only"]; k.Last != nil || k.Status != nil || k.Kills["manual"] != 1 {
		t.Errorf("kills-only: last %v status %v kills %v", k.Last, deref(k.Status), k.Kills)
	}
}

// TestIntegrationFleetViewSeedTable: over a tel.system_health the seed's
// users created (created_at without time zone, varchar status), the view
// is created and reads the daemon's rows; the seed's own rows (no host)
// are not in it.
func TestIntegrationFleetViewSeedTable(t *testing.T) {
	db := testDB(t)
	pool := testPool(t, db)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, testutil.SeedTable+`;
		INSERT INTO tel.system_health (check_type, status, details)
			VALUES ('process_reaper', 'ok', '{"zombie_count": 0, "free_mem_mb": 100}')`); err != nil {
		t.Fatal(err)
	}
	if err := NewPostgres(pool).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tel.system_health (check_type, status, details, host, created_at)
		VALUES ('process_reaper', 'warning', '{"summary_interval_s": 60, "zombie_count": 7, "free_mem_mb": 10, "agents_tracked": 1}',
		'seedbox', now())`); err != nil {
		t.Fatal(err)
	}
	var host, status string
	var silent bool
	var zombies int64
	var ageS float64
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) OVER (), host, status, silent, zombies, extract(epoch FROM now() - last_snapshot)
		FROM tel.fleet`).Scan(&n, &host, &status, &silent, &zombies, &ageS); err != nil {
		t.Fatal(err)
	}
	if n != 1 || host != "seedbox" || status != "warning" || silent || zombies != 7 || ageS < -1 || ageS > 60 {
		t.Errorf("%d rows; %s %s silent %v zombies %d, %.1f s old", n, host, status, silent, zombies, ageS)
	}
}
