package daemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// A daemon that dies mid-kill (SIGKILL, a crash, the box's OOM killer)
// leaves kill rows with outcome pending: the first signal went out, the
// tree was not seen gone. The next daemon finishes the job and the record:
//
//   - A process it finds still alive is killed again (its deadline is
//     past) and its row takes the same id as the pending one (killIDs), so
//     the complete row replaces the pending row, in the spool and in
//     PostgreSQL (Postgres.Insert): one row per kill, never two.
//   - A pending row whose process it does not find, or cannot pair with its
//     own kill, is completed at start (resumer) with outcome interrupted.
//
// Pending rows are read from the spool (not delivered yet) at start, and
// from PostgreSQL (delivered) once it answers.

// OutcomeInterrupted completes a kill row left pending by a daemon that
// stopped before the tree was gone: how it ended was not seen.
const OutcomeInterrupted = "interrupted"

// killIDs chooses the id of a kill row: the same kill — host, boot, PID,
// start time (the /proc clock tick), reason, attempt — gets the same id in
// every run of the daemon. Kills decided at an instant (resource limits,
// pressure, manual) also key on their deadline, since the same process may
// be decided again; a restarted daemon decides anew and writes a row of
// its own. A dry run, or a start time that cannot be read in ticks (the
// process already gone), gets a random id, as every row did before.
//
// A process whose kill failed (or was refused) lives on and may be killed
// again in the same run with the same key (a retry taken back by `keep`,
// then given again): such an id is spent, and the next kill with it gets a
// random one.
type killIDs struct {
	host, boot string
	stat       func(int32) (tracker.ProcInfo, error)

	mu    sync.Mutex
	spent map[string]bool
}

// maxSpent bounds the spent ids kept; beyond it they are forgotten (a
// process that failed to die that many kills ago).
const maxSpent = 10000

// of returns the id for r's row.
func (k *killIDs) of(r reap.Result) string {
	id := k.key(r)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.spent[id] {
		return store.NewID()
	}
	return id
}

// spend marks id as the row of a kill whose process may live on.
func (k *killIDs) spend(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.spent == nil || len(k.spent) >= maxSpent {
		k.spent = map[string]bool{}
	}
	k.spent[id] = true
}

// key is the id r's kill has in every run.
func (k *killIDs) key(r reap.Result) string {
	if r.DryRun || k.boot == "" {
		return store.NewID()
	}
	start := r.Start
	if start.Exact { // from a fork event: the tick it started in, from /proc
		info, err := k.stat(r.PID)
		if err != nil || info.Start.Exact || !info.Start.Same(start) {
			return store.NewID()
		}
		start = info.Start
	}
	var at int64
	if !resumable(string(r.Reason)) {
		at = r.Deadline
	}
	return k.id(r.PID, start.NS, string(r.Reason), r.Attempt, at)
}

// resumable reports whether a kill for reason is the same kill in the next
// run: max age and leftovers follow from the process and its session
// alone (sessions.json keeps a leftover's time).
func resumable(reason string) bool {
	return reason == string(tracker.ReasonMaxAge) || reason == string(tracker.ReasonLeftover)
}

// id is a version 8 (RFC 9562) UUID from a SHA-256 of the kill's key.
func (k *killIDs) id(pid int32, start int64, reason string, attempt int, at int64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "agent-supervisor kill\x00%s\x00%s\x00%d\x00%d\x00%s\x00%d\x00%d",
		k.host, k.boot, pid, start, reason, attempt, at))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// pendingSource reads the pending kill rows a previous run delivered
// (store.Postgres).
type pendingSource interface {
	PendingKills(ctx context.Context, host string, before time.Time) ([]store.Record, error)
}

// resumer completes the kill rows previous runs left pending.
type resumer struct {
	ids    *killIDs
	store  *store.Store
	db     pendingSource // nil without a database
	log    *zap.Logger
	before time.Time       // this run's start: rows signalled earlier are a previous run's
	scan   map[int32]int64 // PID → start (tick ns) at the start-up scan
	done   map[string]bool // ids completed or left to this run's kill
}

// newResumer remembers the start-up scan: a pending row whose process is
// in it is left to this run's kill.
func newResumer(ids *killIDs, st *store.Store, db pendingSource, log *zap.Logger, before time.Time, scan []tracker.ProcInfo) *resumer {
	r := &resumer{ids: ids, store: st, db: db, log: log, before: before, scan: make(map[int32]int64, len(scan)), done: map[string]bool{}}
	for _, p := range scan {
		if !p.Start.Exact && p.State != 'Z' {
			r.scan[p.PID] = p.Start.NS
		}
	}
	return r
}

// fromSpool completes the pending rows still in the spool. Call it before
// this run records any kill.
func (r *resumer) fromSpool() {
	recs := r.store.Spool().Records()
	r.resume("spool", recs)
	// A row the database still has pending may be complete in the spool,
	// on its way: that one wins.
	for _, rec := range recs {
		if rec.Kind == store.KindKill {
			r.done[rec.ID] = true
		}
	}
}

// fromDatabase completes the pending rows already delivered, once the
// database answers (retrying with backoff, 1 s doubling to 30 s), then
// forgets the scan.
func (r *resumer) fromDatabase(ctx context.Context) {
	defer func() { r.scan = nil }()
	if r.db == nil {
		return
	}
	backoff := time.Second
	for {
		recs, err := r.db.PendingKills(ctx, r.ids.host, r.before)
		if err == nil {
			r.resume("database", recs)
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// resume completes each of recs that is a previous run's pending kill row
// this run will not complete by killing its process.
func (r *resumer) resume(from string, recs []store.Record) {
	completed, left := 0, 0
	for _, rec := range recs {
		k := rec.Kill
		if k == nil || k.Outcome != store.OutcomePending || k.DryRun || !rec.Created.Before(r.before) || r.done[rec.ID] {
			continue
		}
		r.done[rec.ID] = true
		start, alive := r.scan[k.PID]
		if alive && resumable(k.Reason) && r.ids.id(k.PID, start, k.Reason, attempt(k), 0) == rec.ID {
			left++ // killed again at once (its deadline is past), under this id
			continue
		}
		done := *k
		done.Outcome = OutcomeInterrupted
		done.Details = make(map[string]float64, len(k.Details)+1)
		for n, v := range k.Details {
			done.Details[n] = v
		}
		done.Details["alive_at_restart"] = 0
		if alive && r.sameStart(start, k.StartedAt) {
			done.Details["alive_at_restart"] = 1
		}
		if _, err := r.store.Replace(rec.ID, store.KindKill, rec.Created, nil, &done); err != nil {
			r.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", k.PID))
			continue
		}
		completed++
	}
	if completed+left > 0 {
		r.log.Info("kill rows left pending by an earlier run", zap.String("from", from),
			zap.Int("completed_interrupted", completed), zap.Int("killed_again", left))
	}
}

// sameStart reports whether a process that started at boottime start (a
// tick) is the one a row says started at wall time t: a PID is not reused
// within a second.
func (r *resumer) sameStart(start int64, t time.Time) bool {
	now := tracker.SystemClock{}.Now()
	boot := now + int64(time.Until(t))
	d := boot - start
	return d > -int64(time.Second) && d < int64(time.Second)
}

// attempt is a kill row's retry attempt (0 for a first kill).
func attempt(k *store.KillRow) int { return int(k.Details["attempt"]) }
