package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
}

// Store takes rows, keeps them in the spool and delivers them.
type Store struct {
	cfg     Config
	log     *zap.Logger
	up      atomic.Bool // database reachable at the last attempt
	flushMu sync.Mutex
	kick    chan struct{}
}

// New returns a Store; Run delivers.
func New(cfg Config) *Store {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = time.Hour
	}
	s := &Store{cfg: cfg, log: cfg.Log, kick: make(chan struct{}, 1)}
	s.up.Store(true)
	return s
}

// Add makes a record durable in the spool and queues it for delivery.
func (s *Store) Add(kind string, created time.Time, snap *SnapshotRow, kill *KillRow) (Record, error) {
	return s.cfg.Spool.Append(Record{Kind: kind, ID: NewID(), Host: s.cfg.Host, Created: created.UTC(), Snapshot: snap, Kill: kill})
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
	nextPrune := time.Now()
	for {
		if s.cfg.Postgres != nil && s.cfg.Spool.Len() > 0 {
			if err := s.deliver(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, time.Second), 30*time.Second)
				if s.up.Swap(false) {
					s.log.Warn("database unreachable: rows stay in the spool and are retried with backoff",
						s.errField(err), zap.Int("spooled", s.cfg.Spool.Len()))
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
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.cfg.Spool.Notify():
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

// deliver sends everything spooled, in order, in batches.
func (s *Store) deliver(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	sent := 0
	for {
		recs := s.cfg.Spool.Pending(500)
		if len(recs) == 0 {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.cfg.Postgres.Insert(cctx, recs)
		cancel()
		if err != nil {
			return err
		}
		if err := s.cfg.Spool.Ack(recs[len(recs)-1].Seq); err != nil {
			// Committed but not forgotten: a replay inserts nothing.
			s.log.Error("spool ack", zap.Error(err))
			return err
		}
		sent += len(recs)
	}
	if !s.up.Swap(true) {
		s.log.Info("database reachable again: spooled rows delivered", zap.Int("delivered", sent))
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
		return errors.New(s.Redact(err.Error()))
	}
	return nil
}

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
		if s.up.Swap(false) {
			s.log.Warn("database unreachable: rows stay in the spool and are retried with backoff",
				s.errField(err), zap.Int("spooled", s.cfg.Spool.Len()))
		}
		return
	}
	if n > 0 {
		s.log.Info("retention: old rows deleted", zap.Int64("rows", n), zap.Time("before", before))
	}
}
