package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Config configures a Store.
type Config struct {
	Spool     *Spool
	Postgres  *Postgres // nil: the spool is the store
	Host      string
	Retention time.Duration
	// Secret is removed from every error before it is logged (the
	// database password).
	Secret string
	Log    *zap.Logger
	// PruneEvery is how often retention runs; zero means hourly.
	PruneEvery time.Duration
	// WriteTimeout bounds one batch's transaction (the daemon sets the
	// server's statement_timeout a little below it); zero means 30s.
	WriteTimeout time.Duration
	// Role is the database role, named in the GRANT a privilege outage
	// asks for.
	Role string
}

// Store takes rows, keeps them in the spool and delivers them.
type Store struct {
	cfg     Config
	log     *zap.Logger
	up      atomic.Bool // database reachable at the last attempt
	flushMu sync.Mutex
	kick    chan struct{}
	seenMu  sync.Mutex
	seen    map[string]bool // refusals logged

	faultMu   sync.Mutex
	dbCause   string // the database outage's cause, "" when up
	dbKey     string // its key: one warning per cause
	diskCause string // the spool's disk fault, "" when none
}

// New returns a Store; Run delivers.
func New(cfg Config) *Store {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = time.Hour
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	s := &Store{cfg: cfg, log: cfg.Log, kick: make(chan struct{}, 1), seen: map[string]bool{}}
	s.up.Store(true)
	return s
}

// Add makes a record durable in the spool and queues it for delivery. Its
// text is first made what PostgreSQL accepts (valid UTF-8, no NUL, the
// command line at most MaxCmdline bytes).
func (s *Store) Add(kind string, created time.Time, snap *SnapshotRow, kill *KillRow) (Record, error) {
	return s.Replace(NewID(), kind, created, snap, kill)
}

// Replace is Add with the id of an earlier record, which it supersedes: a
// kill row written with outcome pending when the first signal went out,
// completed when the tree is gone. An undelivered earlier record is never
// delivered; a delivered one is updated in PostgreSQL if it is still
// pending (Postgres.Insert).
func (s *Store) Replace(id string, kind string, created time.Time, snap *SnapshotRow, kill *KillRow) (Record, error) {
	if (snap == nil) == (kill == nil) || kind != KindSnapshot && kind != KindKill {
		return Record{}, fmt.Errorf("store: a %q record needs exactly one of snapshot and kill", kind)
	}
	r := Record{Kind: kind, ID: id, Host: s.cfg.Host, Created: created.UTC(), Snapshot: snap, Kill: kill}
	sanitize(&r)
	r, err := s.cfg.Spool.Replace(r)
	s.noteDisk()
	return r, err
}

// noteDisk logs the spool's disk fault once per cause, as it appears.
func (s *Store) noteDisk() {
	err := s.cfg.Spool.Fault()
	if err == nil {
		return
	}
	cause := diskCause(err)
	s.faultMu.Lock()
	first := s.diskCause != cause
	s.diskCause = cause
	s.faultMu.Unlock()
	if first {
		s.log.Warn("spool: the disk refuses writes ("+cause+"): rows are held in memory (bounded by --spool-max-rows) and written out when it recovers; kills go on",
			zap.Error(err), zap.Int("held", s.cfg.Spool.Held()), zap.String("dir", s.cfg.Spool.dir))
	}
}

// diskCause is what a disk error comes down to: the errno's text ("no
// space left on device", "read-only file system", ...), one cause however
// many files it hit.
func diskCause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// writeHeld writes out what the spool holds in memory, once the disk takes
// it: true when nothing is held any more.
func (s *Store) writeHeld() bool {
	n := 0
	if s.cfg.Spool.Fault() != nil {
		var err error
		if n, err = s.cfg.Spool.WriteHeld(); err != nil {
			s.noteDisk()
			return false
		}
	}
	s.faultMu.Lock()
	was := s.diskCause
	s.diskCause = ""
	s.faultMu.Unlock()
	if was != "" {
		s.log.Info("spool: the disk takes writes again: held rows written out", zap.Int("rows", n), zap.String("was", was))
	}
	return true
}

// diskLogged reports whether a disk fault was warned of and its recovery
// not yet said.
func (s *Store) diskLogged() bool {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.diskCause != ""
}

// Faults names what is wrong with where rows go, for /healthz's
// "degraded": the spool's disk and the database, each with its cause;
// none when both are fine.
func (s *Store) Faults() []string {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	var out []string
	if err := s.cfg.Spool.Fault(); err != nil {
		out = append(out, fmt.Sprintf("spool: %s: rows held in memory", diskCause(err)))
	}
	if s.dbCause != "" && s.cfg.Postgres != nil && !s.up.Load() {
		out = append(out, "database: "+s.dbCause)
	}
	return out
}

// Spool returns the spool.
func (s *Store) Spool() *Spool { return s.cfg.Spool }

// HasDatabase reports whether rows go on to PostgreSQL.
func (s *Store) HasDatabase() bool { return s.cfg.Postgres != nil }

// Up reports whether the database was reachable at the last attempt.
func (s *Store) Up() bool { return s.cfg.Postgres != nil && s.up.Load() }

// Redact removes the secret from a message.
func (s *Store) Redact(msg string) string {
	if s.cfg.Secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, s.cfg.Secret, "[redacted]")
}

func (s *Store) errField(err error) zap.Field { return zap.String("error", s.Redact(err.Error())) }

// Run delivers spooled rows and applies retention until ctx ends. When the
// database is unreachable it logs that once, retries with backoff (1s
// doubling to 30s) and keeps every row in the spool meanwhile.
func (s *Store) Run(ctx context.Context) {
	backoff := time.Duration(0)
	diskBackoff := time.Duration(0) // retrying a disk that refused writes: 1s doubling to 10s
	nextDisk := time.Now()
	nextPrune := time.Now()
	for {
		if diskBackoff > 0 || s.cfg.Spool.Fault() != nil || s.diskLogged() {
			if time.Now().Before(nextDisk) {
				// not yet
			} else if s.writeHeld() {
				diskBackoff = 0
			} else {
				diskBackoff = min(max(2*diskBackoff, time.Second), 10*time.Second)
				nextDisk = time.Now().Add(diskBackoff)
			}
		}
		if s.cfg.Postgres != nil && s.cfg.Spool.Len() > 0 {
			if err := s.deliver(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, time.Second), 30*time.Second)
				if de := (*DiskError)(nil); errors.As(err, &de) {
					s.noteDisk() // the disk, not the database
				} else {
					s.down(err)
				}
			} else {
				backoff = 0
			}
		}
		if !time.Now().Before(nextPrune) {
			s.prune(ctx)
			nextPrune = time.Now().Add(s.cfg.PruneEvery)
		}
		wait := time.Until(nextPrune)
		if backoff > 0 {
			wait = min(wait, backoff)
		}
		if diskBackoff > 0 {
			wait = min(wait, max(time.Until(nextDisk), 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.cfg.Spool.Notify():
			if s.cfg.Spool.Fault() != nil && diskBackoff == 0 {
				diskBackoff = time.Second // a fault that just appeared: first retry in a second
				nextDisk = time.Now().Add(diskBackoff)
			}
			if backoff > 0 { // new rows do not shorten the backoff
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		case <-s.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// down records a failed attempt and logs it once per cause: a schema this
// role cannot migrate, no privilege on a table, a lost connection, ...
// (Outage), each with what cures it.
func (s *Store) down(err error) {
	s.up.Store(false)
	table := ""
	if re := (*RowError)(nil); errors.As(err, &re) {
		table = re.Table
	}
	key, cause := Outage(err, table, s.cfg.Role)
	s.faultMu.Lock()
	first := s.dbKey != key
	s.dbKey, s.dbCause = key, cause
	s.faultMu.Unlock()
	if !first {
		return
	}
	if se := (*SchemaError)(nil); errors.As(err, &se) {
		s.log.Error(se.Error(), zap.String("error", s.Redact(se.Err.Error())), zap.Int("spooled", s.cfg.Spool.Len()))
		return
	}
	s.log.Warn(cause+": rows stay in the spool and are retried with backoff",
		s.errField(err), zap.Int("spooled", s.cfg.Spool.Len()))
}

// deliver sends everything spooled, in order, in batches. A row the
// database refuses for good (Permanent) is set aside in spool.bad and
// acked, and delivery goes on with the rows after it; an outage keeps
// every row.
func (s *Store) deliver(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	sent := 0
	limit := 0  // the next batch's size, when a refusal was found further in
	single := 0 // rows still to send one at a time, to find an offender
	for {
		n := 500
		switch {
		case single > 0:
			n = 1
			single--
		case limit > 0:
			n, limit = limit, 0
		}
		recs := s.cfg.Spool.Pending(n)
		if len(recs) == 0 {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		err := s.cfg.Postgres.Insert(cctx, recs)
		cancel()
		re := (*RowError)(nil)
		if err != nil && errors.As(err, &re) && Permanent(re.Err) {
			switch {
			case re.Index < 0 && len(recs) > 1:
				single = len(recs) // which row is not known: one at a time
				continue
			case re.Index > 0:
				limit = re.Index // the rows before it first, then it
				continue
			}
			if err := s.setAside(recs[0], re.Err); err != nil {
				return err
			}
			if err := s.cfg.Spool.Ack(recs[0].Seq); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if re != nil && re.Index >= 0 && re.Index < len(recs) {
				re.Table = Table(recs[re.Index])
			}
			return err
		}
		if err := s.cfg.Spool.Ack(recs[len(recs)-1].Seq); err != nil {
			// Committed but not forgotten: a replay inserts nothing.
			s.log.Error("spool ack", zap.Error(err))
			return err
		}
		sent += len(recs)
	}
	s.faultMu.Lock()
	s.dbKey, s.dbCause = "", ""
	s.faultMu.Unlock()
	if !s.up.Swap(true) {
		s.log.Info("database reachable again: spooled rows delivered", zap.Int("delivered", sent))
	}
	s.noteDisk() // an ack the disk refused
	return nil
}

// setAside moves a row the database refuses to spool.bad, logging each
// distinct refusal once.
func (s *Store) setAside(r Record, err error) error {
	msg := s.Redact(err.Error())
	if err := s.cfg.Spool.SetAside(r, "refused by PostgreSQL: "+msg); err != nil {
		return err
	}
	key := msg
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) {
		key = pe.Code + " " + pe.Message // without the row's values
	}
	s.seenMu.Lock()
	first := !s.seen[key]
	if first && len(s.seen) < 1000 {
		s.seen[key] = true
	}
	s.seenMu.Unlock()
	if first {
		s.log.Error("database refused a row: set aside in spool.bad, delivery goes on",
			zap.String("error", msg), zap.String("kind", r.Kind), zap.String("id", r.ID), zap.String("file", s.cfg.Spool.BadPath()))
	}
	return nil
}

// Flush tries to deliver everything now, within ctx.
func (s *Store) Flush(ctx context.Context) error {
	if s.cfg.Postgres == nil {
		return errNoDatabase
	}
	if s.cfg.Spool.Len() == 0 {
		return nil
	}
	err := s.deliver(ctx)
	if err != nil {
		s.up.Store(false)
		return &redactedError{s.Redact(err.Error()), err}
	}
	return nil
}

// redactedError is err with the secret removed from its text; errors.As
// still finds a *SchemaError in it.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func (s *Store) prune(ctx context.Context) {
	before := time.Now().Add(-s.cfg.Retention)
	if s.cfg.Postgres == nil {
		if n, err := s.cfg.Spool.Prune(before); err != nil {
			s.log.Error("retention in the spool", zap.Error(err))
		} else if n > 0 {
			s.log.Info("retention: old rows removed from the spool", zap.Int("rows", n))
		}
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := s.cfg.Postgres.Prune(cctx, s.cfg.Host, before)
	if err != nil {
		s.down(err)
		return
	}
	if n > 0 {
		s.log.Info("retention: old rows deleted", zap.Int64("rows", n), zap.Time("before", before))
	}
}
