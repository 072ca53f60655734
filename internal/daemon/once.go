package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/store"
	"go.uber.org/zap"
)

// killedView is one entry of the seed's "killed" list.
type killedView struct {
	PID        int32  `json:"pid"`
	AgeMinutes int64  `json:"ageMinutes"`
	Comm       string `json:"comm"`
	Note       string `json:"note,omitempty"`
}

// Once is the seed's cron job as a drop-in: one /proc scan, the stale agents
// killed with the daemon's kill protocol, one health row, and the seed's
// JSON on stdout.
func Once(ctx context.Context, cfg *config.Config, stdout, logw io.Writer) error {
	start := time.Now()
	return withDaemon(ctx, cfg, logw, func(d *daemon) error { return once(ctx, d, cfg, stdout, start) })
}

// once is Once's body, with the built daemon.
func once(ctx context.Context, d *daemon, cfg *config.Config, stdout io.Writer, start time.Time) error {
	log := d.log
	d.source, d.rec.keepResults = "proc", true
	d.reaper.NoRetry() // nothing would fire a retry: once exits when its kills are over

	scan, err := d.procs.Scan()
	if err != nil {
		return fmt.Errorf("scan /proc: %w", err)
	}
	d.state.loadLeases() // an operator's extends and keeps hold here too
	d.table.Merge(scan, false)
	tc := reap.TimerConfig{Clock: d.clock, Guard: d.guard, DryRun: cfg.DryRun}
	due := d.table.Queue().PopDue(d.clock.Now(), nil)
	reap.SignalDue(&tc, due)
	d.reaper.Fire(due)
	d.reaper.Wait()
	d.hooks.Stop(hookStopBound)

	snap, err := d.snapshot()
	if err != nil {
		return fmt.Errorf("health snapshot: %w", err)
	}
	if d.store.HasDatabase() {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := d.store.Flush(fctx)
		cancel()
		var se *store.SchemaError
		if errors.As(err, &se) {
			log.Error(se.Error(), zap.String("state_dir", cfg.StateDir)) // the row waits in the spool
		} else if err != nil {
			// Not lost: the row waits in the spool for the next run or the
			// daemon.
			log.Warn("database unreachable: the row stays in the spool", zap.String("error", err.Error()),
				zap.String("state_dir", cfg.StateDir))
		}
	}

	out := snap.Details()
	seed := map[string]any{}
	for _, k := range []string{"zombie_count", "zombie_threshold", "free_mem_mb", "swap_used_mb", "swap_pct",
		"stale_processes_killed", "max_age_minutes"} {
		seed[k] = out[k]
	}
	seed["status"] = snap.Status
	seed["duration_seconds"] = math.Round(time.Since(start).Seconds()*10) / 10
	killed := []killedView{}
	for _, r := range d.rec.results {
		if r.DryRun || r.Outcome == reap.OutcomeRefused {
			continue
		}
		k := killedView{PID: r.PID, Comm: r.Comm, AgeMinutes: (r.Signalled - r.Start.NS) / int64(time.Minute)}
		if r.Outcome == reap.OutcomeGone {
			k.Note = "already_gone"
		}
		killed = append(killed, k)
	}
	seed["killed"] = killed
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(seed)
}
