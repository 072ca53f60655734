package store

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

func snapshotRecord(now time.Time) Record {
	details, _ := json.Marshal(map[string]any{"zombie_count": 3, "zombie_threshold": 500, "free_mem_mb": 20000,
		"swap_used_mb": 0, "swap_pct": 0, "stale_processes_killed": 1, "max_age_minutes": 120,
		"zombie_parents": []map[string]any{{"pid": 10, "comm": "node", "zombies": 3}}})
	return Record{Kind: KindSnapshot, ID: NewID(), Host: "bench", Created: now,
		Snapshot: &SnapshotRow{CheckType: CheckType, Status: "ok", Details: details}}
}

// BenchmarkSpoolAppend is the rate at which rows are made durable while
// the database is away: one write and one fsync each.
func BenchmarkSpoolAppend(b *testing.B) {
	s := benchSpool(b, 1<<30)
	b.ReportAllocs()
	appendRate(b, s, snapshotRecord(time.Now()))
}

// benchSpool opens a spool of at most max rows in a new directory, closed
// when the benchmark ends.
func benchSpool(b *testing.B, max int) *Spool {
	s := openSpool(b, b.TempDir(), max)
	return s
}

// appendRate appends r, under a new ID each time, for as long as b runs,
// and reports the rate.
func appendRate(b *testing.B, s *Spool, r Record) {
	for b.Loop() {
		r.ID = NewID()
		if _, err := s.Append(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkSpoolAppendConcurrent appends from 64 goroutines at once, as
// thousands of simultaneous kills do: group commit shares the fsyncs.
func BenchmarkSpoolAppendConcurrent(b *testing.B) {
	s := benchSpool(b, 1<<30)
	b.SetParallelism(32) // x GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		r := snapshotRecord(time.Now())
		for pb.Next() {
			r.ID = NewID()
			if _, err := s.Append(r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkReplay delivers a spool of rows to PostgreSQL, as after an
// outage: rows per second from spool to committed. Needs TEST_DATABASE_URL.
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testutil.Database(b, "sv_bench_"))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	rows := 10000
	if os.Getenv("SUPERVISOR_BENCH") == "" {
		rows = 500
	}
	for b.Loop() {
		s, err := OpenSpool(b.TempDir(), rows+1)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for i := range rows {
			s.Append(snapshotRecord(now.Add(time.Duration(i))))
		}
		st := New(Config{Spool: s, Postgres: NewPostgres(pool), Host: "bench", Retention: time.Hour})
		t0 := time.Now()
		if err := st.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		if s.Len() != 0 {
			b.Fatalf("%d rows left", s.Len())
		}
		s.Close()
		b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
		b.ReportMetric(took.Seconds(), "replay-s")
		if path := os.Getenv("BENCH_RESULTS"); path != "" {
			line, _ := json.Marshal(map[string]any{"scenario": "replay", "rows": rows, "seconds": took.Seconds(),
				"rows_per_s": float64(rows) / took.Seconds()})
			f, _ := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			f.Write(append(line, '\n'))
			f.Close()
		}
	}
}

// BenchmarkSpoolAppendAtBound is the append rate once the spool is full
// (the database away for long): every append drops the oldest snapshot.
func BenchmarkSpoolAppendAtBound(b *testing.B) {
	const bound = 10000
	s := benchSpool(b, bound)
	now := time.Now()
	for range bound {
		if _, err := s.Append(snapshotRecord(now)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	appendRate(b, s, snapshotRecord(now))
	if s.Len() != bound {
		b.Fatalf("%d rows held, want %d", s.Len(), bound)
	}
}
