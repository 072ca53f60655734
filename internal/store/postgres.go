package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// lockKey is the pg_advisory_lock key under which migrations run: one
// daemon at a time, however many hosts start together.
const lockKey = 0x6167656e74737570 // "agentsup"

// OutcomePending is the outcome of a kill row written when the first signal
// is sent; the complete row replaces it (Store.Replace).
const OutcomePending = "pending"

// Postgres writes records to PostgreSQL.
type Postgres struct {
	pool     *pgxpool.Pool
	migrated atomic.Bool
}

// NewPostgres uses pool, which the caller owns.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

// migration is one embedded SQL file.
type migration struct {
	version int
	name    string
}

func embedded() ([]migration, error) {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: no version number", base)
		}
		out = append(out, migration{v, base})
	}
	return out, nil
}

// SchemaError says the schema is not current and this role may not make
// it so: an operator's job (`supervisor migrate` with an owner role), not
// an outage.
type SchemaError struct {
	Missing []string // migration files not applied
	Err     error
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("schema tel is not current (missing migrations %s) and this role cannot create it: run `supervisor migrate` with an owner role",
		strings.Join(e.Missing, ", "))
}

func (e *SchemaError) Unwrap() error { return e.Err }

// missing returns the embedded migrations not recorded as applied, with
// plain reads only: no DDL, no lock, so a role without CREATE can run it.
func missing(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, all []migration) ([]migration, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('tel.supervisor_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return all, nil
	}
	rows, err := q.Query(ctx, "SELECT version FROM tel.supervisor_migrations")
	if err != nil {
		return nil, err
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	applied := map[int]bool{}
	for _, v := range done {
		applied[int(v)] = true
	}
	var out []migration
	for _, m := range all {
		if !applied[m.version] {
			out = append(out, m)
		}
	}
	return out, nil
}

// Migrate makes the schema current, once per process. It first checks,
// with plain reads, whether every embedded migration is recorded; if so it
// does nothing, so a role with only INSERT/SELECT/UPDATE/DELETE on the
// tables works. Otherwise it applies what is missing under an advisory
// lock; a role that may not (insufficient privilege, a read-only server)
// gets a *SchemaError.
func (p *Postgres) Migrate(ctx context.Context) error {
	if p.migrated.Load() {
		return nil
	}
	all, err := embedded()
	if err != nil {
		return err
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	todo, err := missing(ctx, conn, all)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	if len(todo) == 0 {
		p.migrated.Store(true)
		return nil
	}
	if err := p.apply(ctx, conn); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "42501" || pe.Code == "25006") { // insufficient_privilege, read_only_sql_transaction
			se := &SchemaError{Err: err}
			for _, m := range todo {
				se.Missing = append(se.Missing, m.name)
			}
			return se
		}
		return err
	}
	p.migrated.Store(true)
	return nil
}

// apply runs the missing migrations under the advisory lock.
func (p *Postgres) apply(ctx context.Context, conn *pgxpool.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockKey))
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS tel;
		CREATE TABLE IF NOT EXISTS tel.supervisor_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	all, err := embedded()
	if err != nil {
		return err
	}
	todo, err := missing(ctx, conn, all) // again, under the lock
	if err != nil {
		return err
	}
	for _, m := range todo {
		sql, _ := migrations.ReadFile("migrations/" + m.name)
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO tel.supervisor_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// RowError is a batch's transaction failing on a record: Index is the
// record's position in the slice given to Insert, or -1 when the commit
// failed. Errors before the transaction (connecting, migrating) are not
// RowErrors: no row is at fault.
type RowError struct {
	Index int
	Err   error
	Table string // the record's table, set by the Store for its warning
}

func (e *RowError) Error() string { return fmt.Sprintf("record %d of the batch: %v", e.Index, e.Err) }
func (e *RowError) Unwrap() error { return e.Err }

// Permanent reports whether err is the row's own fault: the database
// refusing its values for good (a data exception or a constraint:
// SQLSTATE classes 22 and 23). Everything else is an outage that a retry
// may cure, however long it takes: no privilege (42501, a revoked grant),
// a missing table (42P01), a lost connection (08), a read-only server
// (25006), a timeout or shutdown (57014, 57P0x), no resources (53), ...
// Rows stay in the spool meanwhile.
func Permanent(err error) bool {
	if errors.Is(err, errNotARow) {
		return true
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23":
		return true
	}
	return false
}

// Outage names the cause of a failed delivery, for the one warning per
// cause and /healthz: key tells causes apart (a lost connection is one
// cause, however its error reads), cause says it with what an operator
// does about it, without the row's values. table is the table of the
// statement that failed ("" when not known), role the daemon's database
// role.
func Outage(err error, table, role string) (key, cause string) {
	var se *SchemaError
	if errors.As(err, &se) {
		return "schema", se.Error()
	}
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	if !errors.As(err, &pe) || errors.As(err, &ce) || strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000" {
		// Not connected at all: no server, a wrong password, no such
		// database, ... (the error says which).
		return "unreachable", "database unreachable"
	}
	on := ""
	if table != "" {
		on = " on " + table
	}
	if role == "" {
		role = "<role>"
	}
	key = pe.Code + on
	switch {
	case pe.Code == "42501":
		t := table
		if t == "" {
			t = "tel.agent_kills, tel.system_health"
		}
		return key, fmt.Sprintf("permission denied%s: GRANT INSERT, SELECT, DELETE ON %s TO %s", on, t, role)
	case pe.Code == "42P01":
		return key, fmt.Sprintf("table missing%s: run `supervisor migrate` with an owner role", on)
	case pe.Code == "25006":
		return key, fmt.Sprintf("the database is read-only%s (a standby, or default_transaction_read_only): point the URL at the primary", on)
	case pe.Code == "57014":
		return key, fmt.Sprintf("statement timeout%s: the database did not answer within --db-statement-timeout", on)
	case strings.HasPrefix(pe.Code, "53"):
		return key, fmt.Sprintf("the database is out of resources%s (SQLSTATE %s)", on, pe.Code)
	case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57P"):
		return "unreachable", "database unreachable"
	}
	return key, fmt.Sprintf("the database refuses the daemon's writes%s (SQLSTATE %s)", on, pe.Code)
}

// Table is the table a record is written to.
func Table(r Record) string {
	if r.Kind == KindSnapshot {
		return "tel.system_health"
	}
	return "tel.agent_kills"
}

// Insert writes records in one transaction. A snapshot whose id is already
// there is skipped, so delivering a record twice writes it once. A kill
// row replaces a row with its id only while that row is pending (DELETE
// of the pending row, then INSERT ... DO NOTHING, in one transaction): the
// complete row wins whether or not the pending one was delivered, and a
// replayed pending row never undoes a complete one. A failing statement is
// reported as a *RowError.
func (p *Postgres) Insert(ctx context.Context, recs []Record) error {
	if err := p.Migrate(ctx); err != nil {
		return err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // after Commit, a no-op
	b := &pgx.Batch{}
	var owner []int // the record of each queued statement
	for i, r := range recs {
		switch {
		case r.Snapshot != nil:
			s := r.Snapshot
			b.Queue(`INSERT INTO tel.system_health (row_id, host, check_type, status, details, action_taken, created_at)
					VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::timestamptz) ON CONFLICT (row_id) DO NOTHING`,
				r.ID, r.Host, s.CheckType, s.Status, string(s.Details), s.ActionTaken, r.Created)
			owner = append(owner, i)
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
			reason := k.Reason
			if reason == "" {
				reason = DefaultReason
			}
			var by *string
			if k.RequestedBy != "" {
				by = &k.RequestedBy
			}
			if k.Outcome != OutcomePending {
				// The complete row replaces a pending one by DELETE and
				// INSERT, not ON CONFLICT DO UPDATE, which needs the UPDATE
				// privilege: a role with INSERT, SELECT and DELETE suffices.
				b.Queue(`DELETE FROM tel.agent_kills WHERE id = $1 AND outcome = 'pending'`, r.ID)
				owner = append(owner, i)
			}
			b.Queue(`INSERT INTO tel.agent_kills (id, host, pid, comm, cmdline, rule, started_at, deadline,
					signalled_at, exited_at, lateness_ms, final_signal, outcome, descendants, dry_run, created_at,
					reason, session_pid, session_started_at, requested_by, memory_bytes, procs, details,
					cgroup, container_id, pod_uid)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
					$21, $22, $23::jsonb, $24, $25, $26)
					ON CONFLICT (id) DO NOTHING`,
				r.ID, r.Host, k.PID, k.Comm, k.Cmdline, k.Rule, k.StartedAt, k.Deadline, k.SignalledAt,
				k.ExitedAt, k.LatenessMS, final, k.Outcome, desc, k.DryRun, r.Created,
				reason, k.SessionPID, k.SessionStartedAt, by, k.MemoryBytes, k.Procs, detailsJSON(k.Details),
				nullText(k.Cgroup), nullText(k.ContainerID), nullText(k.PodUID))
			owner = append(owner, i)
		default:
			return &RowError{Index: i, Err: fmt.Errorf("record %d: %w", r.Seq, errNotARow)}
		}
	}
	br := tx.SendBatch(ctx, b)
	for _, i := range owner {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return &RowError{Index: i, Err: err}
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return &RowError{Index: -1, Err: err} // a deferred constraint: which row is not known
	}
	return nil
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

var (
	errNoDatabase = errors.New("no database configured")
	errNotARow    = errors.New("neither snapshot nor kill")
)

// nullText is s, or NULL when it is empty (unknown).
func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// detailsJSON is a kill's details as jsonb text, nil (NULL) when there are
// none. Non-finite numbers, which JSON cannot hold, are left out.
func detailsJSON(d map[string]float64) *string {
	if len(d) == 0 {
		return nil
	}
	clean := make(map[string]float64, len(d))
	for k, v := range d {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			clean[k] = v
		}
	}
	b, err := json.Marshal(clean)
	if err != nil {
		return nil
	}
	s := string(b)
	return &s
}
