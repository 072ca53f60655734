package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func newLogger(level string, w io.Writer) *zap.Logger {
	var lvl zapcore.Level
	_ = lvl.Set(level)
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	enc.TimeKey = "time"
	enc.EncodeDuration = zapcore.StringDurationEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core)
}

// daemon is the running supervisor: the wiring main does, kept together so
// the HTTP handlers and the summariser can read it.
type daemon struct {
	cfg       *Config
	log       *zap.Logger
	clock     tracker.Clock
	procs     *tracker.ProcFS
	guard     *reap.Guard
	table     *tracker.Table
	reaper    *reap.Reaper
	timer     *reap.Timer      // nil in `once`
	conn      *procevents.Conn // nil when polling
	store     *store.Store
	pool      *pgxpool.Pool
	collector *health.Collector
	metrics   *metrics

	source string
	ready  atomic.Bool
	rate   atomic.Uint64 // events per second over the last second, float64 bits
	resum  chan time.Duration

	mu           sync.Mutex
	live         *Config // the configuration in force: cfg, or the last SIGHUP's
	killed       []int32 // PIDs killed since the last snapshot
	lastSnapshot time.Time
	results      []reap.Result // kept by `once` for its output
	keepResults  bool
}

// newDaemon builds the parts `run` and `once` share: /proc, the guard, the
// table, the reaper and the store.
func newDaemon(ctx context.Context, cfg *Config, log *zap.Logger) (*daemon, error) {
	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		return nil, err
	}
	guard, err := reap.NewGuard(procs)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, clock: tracker.SystemClock{}, procs: procs, guard: guard,
		live: cfg, resum: make(chan time.Duration, 1)}
	d.table = tracker.NewTable(tracker.Config{
		Rules: cfg.Agents, Under: cfg.Under, MaxAge: cfg.MaxAge,
		Proc: procs, Clock: d.clock, Pin: reap.Pinner(procs), Queue: &tracker.Deadlines{},
		Log: log.Named("tracker"),
	})
	d.reaper = reap.New(reap.Config{
		Grace: cfg.KillGrace, DryRun: cfg.DryRun, Tree: d.table, Procs: procs,
		Clock: d.clock, Guard: guard, Log: log.Named("reap"), OnResult: d.onResult,
	})
	d.collector, err = health.NewCollector("/proc", "/sys/fs/cgroup", procs.Scan, health.Thresholds{
		Zombies: cfg.ZombieWarnThreshold, FreeMemMB: cfg.FreeMemWarnMB, SwapPct: cfg.SwapWarnPct,
	})
	if err != nil {
		return nil, err
	}
	spool, err := store.OpenSpool(cfg.StateDir, cfg.SpoolMaxRows)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	scfg := store.Config{Spool: spool, Host: cfg.HostID, Retention: cfg.Retention, Log: log.Named("store")}
	if cfg.DatabaseURL != "" {
		pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return nil, errors.New("database URL: " + redactURL(cfg.DatabaseURL, err.Error()))
		}
		pcfg.MaxConns = 4
		scfg.Secret = pcfg.ConnConfig.Password
		// pgxpool connects lazily: an unreachable database at start is an
		// outage like any other, not a reason not to reap.
		if d.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			return nil, errors.New("database: " + redactURL(cfg.DatabaseURL, err.Error()))
		}
		scfg.Postgres = store.NewPostgres(d.pool)
	}
	d.store = store.New(scfg)
	d.metrics = newMetrics(d)
	return d, nil
}

func (d *daemon) close() {
	if d.pool != nil {
		d.pool.Close()
	}
	d.store.Spool().Close()
}

// onResult records a finished reap: its own row, written as it happens, and
// its PID for the next snapshot's action_taken.
func (d *daemon) onResult(r reap.Result) {
	now := d.clock.Now()
	wall := func(boot int64) time.Time { return tracker.Time(boot, now).UTC() }
	k := &store.KillRow{
		PID: r.PID, Comm: r.Comm, Cmdline: r.Cmdline, Rule: r.Rule,
		StartedAt: wall(r.Start.NS), Deadline: wall(r.Deadline), SignalledAt: wall(r.Signalled),
		LatenessMS: float64(r.Lateness()) / 1e6, FinalSignal: r.FinalSignal, Outcome: r.Outcome,
		Descendants: r.Descendants, DryRun: r.DryRun,
	}
	if r.Exited != 0 {
		t := wall(r.Exited)
		k.ExitedAt = &t
	}
	d.metrics.kill(r)
	if _, err := d.store.Add(store.KindKill, wall(r.Signalled), nil, k); err != nil {
		d.log.Error("spool kill record", zap.Error(err), zap.Int32("pid", r.PID))
	}
	d.mu.Lock()
	if !r.DryRun && r.Outcome != reap.OutcomeRefused {
		d.killed = append(d.killed, r.PID)
	}
	if d.keepResults {
		d.results = append(d.results, r)
	}
	d.mu.Unlock()
}

// snapshot takes a health snapshot and stores it as a tel.system_health row.
func (d *daemon) snapshot() (health.Snapshot, error) {
	now := time.Now()
	st := d.table.Stats()
	hd := health.Daemon{Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Resyncs: st.Resyncs, MaxAge: d.table.MaxAge(),
		SpoolRows: d.store.Spool().Len(), SpoolDropped: d.store.Spool().Dropped()}
	for _, n := range st.Events {
		hd.EventsReceived += n
	}
	if d.conn != nil {
		hd.EventsLost = d.conn.Stats().Lost
	}
	boot := d.clock.Now()
	for _, a := range d.table.Queue().Snapshot() {
		hd.OldestAgentAge = max(hd.OldestAgentAge, time.Duration(boot-a.Start.NS))
	}
	d.mu.Lock()
	hd.KilledPIDs, d.killed = d.killed, nil
	d.mu.Unlock()
	snap, err := d.collector.Collect(now, hd)
	if err != nil {
		d.mu.Lock()
		d.killed = append(hd.KilledPIDs, d.killed...) // they go in the next one
		d.mu.Unlock()
		return snap, err
	}
	details, err := json.Marshal(snap.Details())
	if err != nil {
		return snap, err
	}
	row := &store.SnapshotRow{CheckType: store.CheckType, Status: snap.Status, Details: details, ActionTaken: snap.ActionTaken()}
	if _, err := d.store.Add(store.KindSnapshot, now, row, nil); err != nil {
		return snap, err
	}
	d.metrics.snapshot(snap)
	d.mu.Lock()
	d.lastSnapshot = now
	d.mu.Unlock()
	d.log.Info("snapshot", zap.Duration("took", time.Since(now)), zap.String("status", snap.Status), zap.Int("zombies", snap.ZombieCount),
		zap.Int64("free_mem_mb", snap.FreeMemMB), zap.Float64("swap_fraction", snap.SwapFraction),
		zap.Int("killed", len(hd.KilledPIDs)), zap.Int("agents", hd.Agents))
	return snap, nil
}

// summarise snapshots at start and every summary interval.
func (d *daemon) summarise(ctx context.Context) {
	t := time.NewTicker(d.cfg.SummaryInterval)
	defer t.Stop()
	for {
		if _, err := d.snapshot(); err != nil {
			d.log.Error("health snapshot", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case iv := <-d.resum:
			t.Reset(iv)
		case <-t.C:
		}
	}
}

// sampleRate keeps the event rate for status.
func (d *daemon) sampleRate(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	total := func() (n uint64) {
		for _, v := range d.table.Stats().Events {
			n += v
		}
		return n
	}
	last, at := total(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := total()
			d.rate.Store(math.Float64bits(float64(n-last) / now.Sub(at).Seconds()))
			last, at = n, now
		}
	}
}

// applyReload puts a new configuration in force. Deadlines are recomputed
// from each agent's own start: a reload can move them earlier or later but
// never resets an agent's age. Settings that only take effect at start are
// reported, not applied.
func (d *daemon) applyReload(n *Config) {
	d.mu.Lock()
	old := d.live
	d.live = n
	d.mu.Unlock()
	var changed, restart []string
	if n.MaxAge != old.MaxAge {
		d.table.SetMaxAge(n.MaxAge)
		changed = append(changed, "max-age")
	}
	if n.KillGrace != old.KillGrace {
		d.reaper.SetGrace(n.KillGrace)
		changed = append(changed, "kill-grace")
	}
	if fmt.Sprint(n.Agents) != fmt.Sprint(old.Agents) || fmt.Sprint(n.Under) != fmt.Sprint(old.Under) {
		d.table.SetRules(n.Agents, n.Under)
		changed = append(changed, "agent", "under")
	}
	if n.ZombieWarnThreshold != old.ZombieWarnThreshold || n.FreeMemWarnMB != old.FreeMemWarnMB || n.SwapWarnPct != old.SwapWarnPct {
		d.collector.SetThresholds(health.Thresholds{Zombies: n.ZombieWarnThreshold, FreeMemMB: n.FreeMemWarnMB, SwapPct: n.SwapWarnPct})
		changed = append(changed, "thresholds")
	}
	if n.SummaryInterval != old.SummaryInterval {
		select {
		case d.resum <- n.SummaryInterval:
		default:
		}
		changed = append(changed, "summary-interval")
	}
	for name, diff := range map[string]bool{
		"source": n.Source != old.Source, "listen": n.Listen != old.Listen, "state-dir": n.StateDir != old.StateDir,
		"database-url": n.DatabaseURL != old.DatabaseURL, "host-id": n.HostID != old.HostID, "dry-run": n.DryRun != old.DryRun,
		"realtime": n.Realtime != old.Realtime, "netlink-rcvbuf": n.NetlinkRcvbuf != old.NetlinkRcvbuf,
		"poll-interval": n.PollInterval != old.PollInterval, "retention": n.Retention != old.Retention,
		"spool-max-rows": n.SpoolMaxRows != old.SpoolMaxRows, "log-level": n.LogLevel != old.LogLevel,
	} {
		if diff {
			restart = append(restart, name)
		}
	}
	sort.Strings(restart)
	d.log.Info("configuration reloaded", zap.Strings("changed", changed), zap.Strings("need_restart", restart),
		zap.Duration("max_age", n.MaxAge), zap.Duration("kill_grace", n.KillGrace), zap.Stringers("agents", n.Agents))
}

func run(ctx context.Context, cfg *Config, logw io.Writer, reload func() (*Config, error)) error {
	log := newLogger(cfg.LogLevel, logw)
	defer log.Sync()

	d, err := newDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	d.timer, err = reap.NewTimer(reap.TimerConfig{
		Queue: d.table.Queue(), Clock: d.clock, Guard: d.guard, DryRun: cfg.DryRun, Realtime: cfg.Realtime, Fire: d.reaper.Fire,
	})
	if err != nil {
		return err
	}

	if os.Geteuid() != 0 {
		log.Warn("not running as root: the proc connector and signalling other users' processes need root (or CAP_NET_ADMIN and CAP_KILL)")
	}

	// Subscribe first, then scan /proc, then apply the events that queued
	// up meanwhile: no process can fall in between.
	d.source = cfg.Source
	if d.source != "proc" {
		d.conn, err = procevents.Dial(procevents.Config{ReadBuffer: cfg.NetlinkRcvbuf, OnForged: func(port uint32) {
			log.Warn("forged proc connector message dropped", zap.Uint32("sender_port", port))
		}})
		switch {
		case err != nil && d.source == "netlink":
			return fmt.Errorf("event source netlink: %w", err)
		case err != nil:
			log.Warn("proc connector unavailable, falling back to polling /proc: agents are discovered up to one poll interval late, deadlines stay exact",
				zap.Error(err), zap.Duration("poll_interval", cfg.PollInterval))
			d.source = "proc"
		default:
			d.source = "netlink"
			d.metrics.forged(d.conn)
		}
	}
	t0 := time.Now()
	scan, err := d.procs.Scan()
	if err != nil {
		return fmt.Errorf("initial /proc scan: %w", err)
	}
	t1 := time.Now()
	d.table.Merge(scan, false)
	st := d.table.Stats()
	log.Info("initial scan", zap.Int("processes", st.Processes), zap.Int("agents", st.Agents),
		zap.Duration("took", time.Since(t0)), zap.Duration("read", t1.Sub(t0)), zap.Duration("merge", time.Since(t1)))

	timerDone := make(chan struct{})
	go func() {
		d.timer.Run()
		close(timerDone)
	}()
	storeCtx, stopStore := context.WithCancel(context.Background())
	defer stopStore()
	storeDone := make(chan struct{})
	go func() {
		d.store.Run(storeCtx)
		close(storeDone)
	}()

	var srv *http.Server
	var addr string
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		addr = ln.Addr().String()
		srv = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", zap.Error(err))
			}
		}()
	}

	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if d.conn != nil {
			d.eventLoop(ctx)
		} else {
			d.pollLoop(ctx)
		}
	}()
	sumDone := make(chan struct{})
	go func() {
		d.summarise(ctx)
		close(sumDone)
	}()
	go d.sampleRate(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				n, err := reload()
				if err != nil {
					log.Error("reload rejected; the old configuration stays in force", zap.String("error", err.Error()))
					continue
				}
				d.applyReload(n)
			}
		}
	}()

	d.ready.Store(true)
	fields := []zap.Field{
		zap.String("source", d.source), zap.String("listen", addr),
		zap.Duration("max_age", cfg.MaxAge), zap.Duration("kill_grace", cfg.KillGrace),
		zap.Stringers("agents", cfg.Agents), zap.Stringers("under", cfg.Under),
		zap.Bool("dry_run", cfg.DryRun), zap.Int("pid", os.Getpid()), zap.String("host", cfg.HostID),
		zap.Bool("database", cfg.DatabaseURL != ""), zap.String("state_dir", cfg.StateDir),
		zap.Bool("realtime_timer", d.timer.RT()),
	}
	if d.conn != nil {
		fields = append(fields, zap.Int("rcvbuf", d.conn.ReadBuffer()))
	}
	log.Info("ready", fields...)

	<-ctx.Done()
	log.Info("shutting down")
	if d.conn != nil {
		_ = d.conn.Interrupt()
	}
	<-loopDone
	<-sumDone
	d.timer.Stop()
	<-timerDone
	d.reaper.Wait() // in-flight kills finish: half-killed trees help no one
	stopStore()
	<-storeDone
	if d.store.HasDatabase() {
		// Deliver what is spooled, within a bound; what is not delivered
		// stays in the spool for the next start.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.store.Flush(fctx); err != nil {
			log.Warn("rows left in the spool for the next start", zap.String("error", err.Error()),
				zap.Int("spooled", d.store.Spool().Len()))
		}
		cancel()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	log.Info("stopped")
	return nil
}

// eventLoop applies proc connector events to the table until ctx ends.
func (d *daemon) eventLoop(ctx context.Context) {
	apply := d.table.Apply // bound once: a method value allocates
	var lastWarn time.Time
	var resyncsSinceWarn int
	for {
		err := d.conn.Read(apply)
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, procevents.ErrOverrun):
			t0 := time.Now()
			d.resync()
			resyncsSinceWarn++
			if time.Since(lastWarn) > 10*time.Second {
				st := d.conn.Stats()
				d.log.Warn("proc connector overrun: events lost, table rebuilt from /proc",
					zap.Uint64("events_lost", st.Lost), zap.Uint64("overruns", st.Overruns),
					zap.Int("resyncs_since_last_warning", resyncsSinceWarn), zap.Duration("resync_took", time.Since(t0)))
				lastWarn, resyncsSinceWarn = time.Now(), 0
			}
		default:
			d.log.Error("read proc events", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // don't spin on a persistent error
		}
	}
}

func (d *daemon) resync() {
	start := d.clock.Now() // events stamped before it are in the scan already
	scan, err := d.procs.Scan()
	if err != nil {
		d.log.Error("resync: scan /proc", zap.Error(err))
		return
	}
	d.table.MergeAt(scan, true, start)
}

// pollLoop rescans /proc every poll interval: the fallback when the proc
// connector is not available.
func (d *daemon) pollLoop(ctx context.Context) {
	tk := time.NewTicker(d.cfg.PollInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			scan, err := d.procs.Scan()
			if err != nil {
				d.log.Error("poll /proc", zap.Error(err))
				continue
			}
			d.table.Merge(scan, false)
		}
	}
}

func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.HandleFunc("GET /agents", d.agents)
	mux.Handle("GET /metrics", d.metrics.handler())
	return mux
}

// eventTypes name tracker.Counters.Events, in order.
var eventTypes = []string{"fork", "exec", "comm", "exit", "other"}

type healthView struct {
	Status     string            `json:"status"`
	Source     string            `json:"source"`
	Processes  int               `json:"processes"`
	Agents     int               `json:"agents"`
	Events     uint64            `json:"events"`
	ByType     map[string]uint64 `json:"events_by_type"`
	EventsLost uint64            `json:"events_lost"`
	Overruns   uint64            `json:"overruns"`
	Resyncs    uint64            `json:"resyncs"`
	BadMsgs    uint64            `json:"bad_messages"`
	Forged     uint64            `json:"forged"`
	Rcvbuf     int               `json:"rcvbuf,omitempty"`
	Realtime   bool              `json:"realtime_timer"`
	DryRun     bool              `json:"dry_run"`
	Database   string            `json:"database"` // "none", "up" or "down"
	SpoolRows  int               `json:"spool_rows"`
	Dropped    uint64            `json:"spool_dropped"`
	Host       string            `json:"host"`
	LastSnap   string            `json:"last_snapshot,omitempty"`
	Rate       float64           `json:"events_per_second"`
	MaxAge     string            `json:"max_age"`
}

func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	st := d.table.Stats()
	h := healthView{Status: "ok", Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Resyncs: st.Resyncs, Realtime: d.timer.RT(), DryRun: d.cfg.DryRun, Database: "none",
		SpoolRows: d.store.Spool().Len(), Dropped: d.store.Spool().Dropped(), Host: d.cfg.HostID,
		Rate: math.Float64frombits(d.rate.Load()), MaxAge: d.table.MaxAge().String()}
	switch {
	case d.store.Up():
		h.Database = "up"
	case d.store.HasDatabase():
		h.Database = "down"
	}
	d.mu.Lock()
	if !d.lastSnapshot.IsZero() {
		h.LastSnap = d.lastSnapshot.UTC().Format(time.RFC3339Nano)
	}
	d.mu.Unlock()
	h.ByType = map[string]uint64{}
	for i, n := range st.Events {
		h.Events += n
		h.ByType[eventTypes[i]] = n
	}
	if d.conn != nil {
		cs := d.conn.Stats()
		h.EventsLost, h.Overruns, h.BadMsgs, h.Rcvbuf = cs.Lost, cs.Overruns, cs.Bad, d.conn.ReadBuffer()
		h.Forged = cs.Forged
	}
	code := http.StatusOK
	if !d.ready.Load() {
		h.Status, code = "starting", http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

type agentView struct {
	PID         int32     `json:"pid"`
	Comm        string    `json:"comm"`
	Cmdline     string    `json:"cmdline"`
	StartedAt   time.Time `json:"started_at"`
	Deadline    time.Time `json:"deadline"`
	SecondsLeft float64   `json:"seconds_left"`
	Rule        string    `json:"rule"`
}

func (d *daemon) agents(w http.ResponseWriter, r *http.Request) {
	now := d.clock.Now()
	list := d.table.Queue().Snapshot()
	sort.Slice(list, func(i, j int) bool { return list[i].Deadline < list[j].Deadline })
	out := make([]agentView, 0, len(list))
	for _, a := range list {
		out = append(out, agentView{
			PID: a.PID, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule,
			StartedAt:   tracker.Time(a.Start.NS, now),
			Deadline:    tracker.Time(a.Deadline, now),
			SecondsLeft: float64(a.Deadline-now) / 1e9,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
