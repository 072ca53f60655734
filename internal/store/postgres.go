package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// lockKey is the pg_advisory_lock key under which migrations run: one
// daemon at a time, however many hosts start together.
const lockKey = 0x6167656e74737570 // "agentsup"

// Postgres writes records to PostgreSQL.
type Postgres struct {
	pool     *pgxpool.Pool
	migrated bool
}

// NewPostgres uses pool, which the caller owns.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

// Migrate creates what is missing, once per process, under an advisory lock.
func (p *Postgres) Migrate(ctx context.Context) error {
	if p.migrated {
		return nil
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockKey))
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS tel;
		CREATE TABLE IF NOT EXISTS tel.supervisor_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: no version number", base)
		}
		var done bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM tel.supervisor_migrations WHERE version = $1)", v).Scan(&done); err != nil {
			return err
		}
		if done {
			continue
		}
		sql, _ := migrations.ReadFile(name)
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO tel.supervisor_migrations (version, name) VALUES ($1, $2)", v, base)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	p.migrated = true
	return nil
}

// Insert writes records in one transaction. A record whose id is already
// there is skipped, so delivering a record twice writes it once.
func (p *Postgres) Insert(ctx context.Context, recs []Record) error {
	if err := p.Migrate(ctx); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, r := range recs {
			switch {
			case r.Snapshot != nil:
				s := r.Snapshot
				b.Queue(`INSERT INTO tel.system_health (row_id, host, check_type, status, details, action_taken, created_at)
					VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::timestamptz) ON CONFLICT (row_id) DO NOTHING`,
					r.ID, r.Host, s.CheckType, s.Status, string(s.Details), s.ActionTaken, r.Created)
			case r.Kill != nil:
				k := r.Kill
				var final *string
				if k.FinalSignal != "" {
					final = &k.FinalSignal
				}
				desc := k.Descendants
				if desc == nil {
					desc = []int32{}
				}
				b.Queue(`INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
					signalled_at, exited_at, lateness_ms, final_signal, outcome, descendants, dry_run, created_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
					ON CONFLICT (id) DO NOTHING`,
					r.ID, r.Host, k.PID, k.Comm, k.Cmdline, k.Rule, k.StartedAt, k.Deadline, k.SignalledAt,
					k.ExitedAt, k.LatenessMS, final, k.Outcome, desc, k.DryRun, r.Created)
			default:
				return fmt.Errorf("record %d: neither snapshot nor kill", r.Seq)
			}
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// Prune deletes host's rows older than before.
func (p *Postgres) Prune(ctx context.Context, host string, before time.Time) (int64, error) {
	if err := p.Migrate(ctx); err != nil {
		return 0, err
	}
	a, err := p.pool.Exec(ctx, `DELETE FROM tel.system_health WHERE check_type = $1 AND host = $2 AND created_at < $3`,
		CheckType, host, before)
	if err != nil {
		return 0, err
	}
	b, err := p.pool.Exec(ctx, `DELETE FROM tel.agent_kills WHERE host = $1 AND created_at < $2`, host, before)
	if err != nil {
		return 0, err
	}
	return a.RowsAffected() + b.RowsAffected(), nil
}

var errNoDatabase = errors.New("no database configured")
