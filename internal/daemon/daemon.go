package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/hook"
	"github.com/agent-supervisor/supervisor/internal/metrics"
	"github.com/agent-supervisor/supervisor/internal/policy/limits"
	"github.com/agent-supervisor/supervisor/internal/policy/pressure"
	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/statefile"
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
	cfg       *config.Config
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
	db        *store.Postgres // nil without a database
	collector *health.Collector
	metrics   *metrics.Metrics
	events    *events.Hub // the /events stream (served by internal/api; fed by intake.go and records.go)
	lostSeen  uint64      // proc connector events lost, as last published (eventLoop only)
	unlock    func()      // closes the spool and releases the state dir

	api *api.Server // the endpoints: /healthz, /metrics, /agents, /events

	source string
	ready  atomic.Bool
	rate   atomic.Uint64 // events per second over the last second, float64 bits
	resum  chan time.Duration
	hooks  *hook.Runner // --on-kill
	rec    *recorder    // kill rows, metrics, events, hooks (records.go)
	state  *stateDir    // sessions.json, leases.json (state.go)

	mu           sync.Mutex
	live         *config.Config // the configuration in force: cfg, or the last SIGHUP's
	lastSnapshot time.Time

	// afterReady, if set, runs once the daemon is ready (init: initMode.attach).
	afterReady func()

	res      *limits.Guard   // the resource limits (internal/policy/limits)
	pressure *pressure.Watch // the PSI trigger (internal/policy/pressure); nil until run starts it
}

// newDaemon builds the parts `run` and `once` share: /proc, the guard, the
// table, the reaper and the store.
func newDaemon(ctx context.Context, cfg *config.Config, log *zap.Logger) (*daemon, error) {
	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		return nil, err
	}
	if err := procs.CheckOwn(); err != nil {
		return nil, err
	}
	findCgroupNamespace(procs, cfg) // cgns.go
	guard, err := reap.NewGuard(procs)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, clock: tracker.SystemClock{}, procs: procs, guard: guard,
		live: cfg, resum: make(chan time.Duration, 1), events: events.NewHub(cfg.EventBuffer)}
	pins := reap.NewPins(procs, log.Named("reap"))
	d.table = tracker.NewTable(tracker.Config{
		Rules: cfg.Agents, Under: cfg.Under, MaxAge: cfg.MaxAge,
		Proc: procs, Clock: d.clock, Pin: pins.Pinner(), Queue: &tracker.Deadlines{},
		Log: log.Named("tracker"), Leftovers: cfg.Leftovers == "kill", LeftoverGrace: cfg.LeftoverGrace, Keep: cfg.Keep,
		NoKeepEnv: !cfg.KeepEnv, DryRun: cfg.DryRun, OnNotice: d.onNotice,
	})
	d.reaper = reap.New(reap.Config{
		Grace: cfg.KillGrace, DryRun: cfg.DryRun, Tree: d.table, Procs: procs,
		Clock: d.clock, Guard: guard, Log: log.Named("reap"), OnSignal: func(r reap.Result) { d.rec.onSignal(r) }, OnResult: func(r reap.Result) { d.rec.onResult(r) }, Pins: pins,
	})
	d.collector, err = health.NewCollector("/proc", "/sys/fs/cgroup", procs.Scan, health.Thresholds{
		Zombies: cfg.ZombieWarnThreshold, FreeMemMB: cfg.FreeMemWarnMB, SwapPct: cfg.SwapWarnPct,
	})
	if err != nil {
		return nil, err
	}
	// One owner per state dir: a second `run` or `once` would write the
	// same spool.
	unlock, err := store.LockDir(cfg.StateDir)
	if ue := (*store.UnwritableError)(nil); errors.As(err, &ue) {
		// Reaping never depends on the disk: rows and state are held in
		// memory until it takes them (records.go, state.go).
		log.Warn(ue.Error()+"; reaping goes on, rows and state are held in memory and written when it can be",
			zap.String("error", ue.Err.Error()))
	} else if err != nil {
		return nil, err
	}
	spool, err := store.OpenSpool(cfg.StateDir, cfg.SpoolMaxRows)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("state dir: %w", err)
	}
	d.unlock = func() { spool.Close(); unlock() }
	if n, err := spool.LoadDamage(); n > 0 || err != nil {
		log.Warn("spool: damaged lines set aside, every valid row kept", zap.Int("lines", n),
			zap.String("file", spool.BadPath()), zap.Error(err))
	}
	scfg := store.Config{Spool: spool, Host: cfg.HostID, Retention: cfg.Retention, Log: log.Named("store"),
		WriteTimeout: cfg.DBStatementTimeout + 5*time.Second}
	if cfg.DatabaseURL != "" {
		pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			d.unlock()
			return nil, errors.New("database URL: " + config.RedactURL(cfg.DatabaseURL, err.Error()))
		}
		pcfg.MaxConns = 4
		// A stuck database fails a batch (57014, an outage: the rows stay
		// in the spool) instead of stalling delivery for ever.
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.DBStatementTimeout.Milliseconds(), 10)
		scfg.Secret = pcfg.ConnConfig.Password
		scfg.Role = pcfg.ConnConfig.User
		// pgxpool connects lazily: an unreachable database at start is an
		// outage like any other, not a reason not to reap.
		if d.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			d.unlock()
			return nil, errors.New("database: " + config.RedactURL(cfg.DatabaseURL, err.Error()))
		}
		scfg.Postgres = store.NewPostgres(d.pool)
		d.db = scfg.Postgres
	}
	d.store = store.New(scfg)
	d.hooks = hook.New(hook.Config{Timeout: cfg.HookTimeout, Log: log.Named("hook")})
	d.metrics = metrics.New()
	d.metrics.Register(&daemonCollector{d: d}, hookCollector{d.hooks})
	d.state = &stateDir{dir: cfg.StateDir, table: d.table, log: log}
	d.rec = &recorder{clock: d.clock, log: log, store: d.store, metrics: d.metrics, events: d.events, hooks: d.hooks,
		host: cfg.HostID, onKill: func() string { return d.liveConfig().OnKill },
		ids: &killIDs{host: cfg.HostID, boot: statefile.BootID(), stat: procs.Stat}}
	d.metrics.EventHub(d.events)
	d.res = limits.New(limits.Config{Settings: limitSettings(cfg), DryRun: cfg.DryRun, Table: d.table,
		Sampler: resource.NewSampler(d.table, resource.NewProcReader("/proc"), d.clock), Now: d.clock.Now,
		Log: log.Named("resource"), Registerer: d.metrics.Registerer(), OnDryRun: d.rec.dryRun,
		PressureArmed: func() bool { return d.pressure.Armed() }})
	// The policies' kill series, at 0 from the start.
	d.metrics.KillReasons(append([]tracker.Reason{tracker.ReasonPressure}, limits.Reasons...)...)
	d.api = api.New(api.Config{Log: log, APISocket: cfg.APISocket, ControlGroup: cfg.ControlGroup, ControlGID: cfg.ControlGID,
		Listen: cfg.Listen, MetricsListen: cfg.MetricsListen, HostID: cfg.HostID,
		Health: d.health, Ready: d.ready.Load, Agents: d.agentViews, Kills: d.rec.recentKills, Events: d.events, Metrics: d.metrics.Handler()})
	d.metrics.Register(d.api.Collector())
	return d, nil
}

// liveConfig is the configuration in force: the start's, or the last
// SIGHUP's.
func (d *daemon) liveConfig() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

func (d *daemon) close() {
	d.table.Close() // its /proc retry timer (a no-op if run closed it)
	if d.pool != nil {
		d.pool.Close()
	}
	// Rows held in memory because the disk refused them (and not
	// delivered): a last try, else say plainly what is lost.
	if sp := d.store.Spool(); sp.Held() > 0 {
		if n, err := sp.WriteHeld(); err != nil {
			d.log.Error("rows held in memory are lost at exit: the state dir still refuses them and the database did not take them",
				zap.Int("rows", n), zap.Error(err))
		}
	}
	d.unlock() // closes the spool, then lets the next owner in
}

// applyReload puts a new configuration in force. Deadlines are recomputed
// from each agent's own start: a reload can move them earlier or later but
// never resets an agent's age. Settings that only take effect at start are
// reported, not applied.
func (d *daemon) applyReload(n *config.Config) {
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
	if n.Leftovers != old.Leftovers || n.LeftoverGrace != old.LeftoverGrace {
		d.table.SetLeftovers(n.Leftovers == "kill", n.LeftoverGrace)
		changed = append(changed, "leftovers")
	}
	if fmt.Sprint(n.Keep) != fmt.Sprint(old.Keep) {
		d.table.SetKeep(n.Keep)
		changed = append(changed, "keep")
	}
	if n.KeepEnv != old.KeepEnv {
		d.table.SetKeepEnv(n.KeepEnv)
		changed = append(changed, "keep-env")
	}
	if fmt.Sprint(n.Agents) != fmt.Sprint(old.Agents) || fmt.Sprint(n.Under) != fmt.Sprint(old.Under) {
		d.table.SetRules(n.Agents, n.Under)
		changed = append(changed, "agent", "under")
	}
	if n.ZombieWarnThreshold != old.ZombieWarnThreshold || n.FreeMemWarnMB != old.FreeMemWarnMB || n.SwapWarnPct != old.SwapWarnPct {
		d.collector.SetThresholds(health.Thresholds{Zombies: n.ZombieWarnThreshold, FreeMemMB: n.FreeMemWarnMB, SwapPct: n.SwapWarnPct})
		changed = append(changed, "thresholds")
	}
	changed = append(changed, d.res.Reload(limitSettings(n))...)
	if n.OnKill != old.OnKill {
		changed = append(changed, "on-kill") // onResult reads it from d.live
	}
	if n.SummaryInterval != old.SummaryInterval {
		select {
		case d.resum <- n.SummaryInterval:
		default:
		}
		changed = append(changed, "summary-interval")
	}
	for name, diff := range restartChanges(n, old) {
		if diff {
			restart = append(restart, name)
		}
	}
	sort.Strings(restart)
	d.log.Info("configuration reloaded", zap.Strings("changed", changed), zap.Strings("need_restart", restart),
		zap.Duration("max_age", n.MaxAge), zap.Duration("kill_grace", n.KillGrace), zap.Stringers("agents", n.Agents))
}

// Run is the daemon. attach, if given, is called once the event source is
// known and before the first scan (supervisor init wires itself in there).
func Run(ctx context.Context, cfg *config.Config, logw io.Writer, reload func() (*config.Config, error), attach ...func(*daemon)) error {
	return withDaemon(ctx, cfg, logw, func(d *daemon) error { return run(ctx, d, cfg, reload, attach) })
}

// withDaemon builds the daemon for cfg, logging to logw, and runs body with
// it; the daemon is closed and the log synced when body returns.
func withDaemon(ctx context.Context, cfg *config.Config, logw io.Writer, body func(*daemon) error) error {
	log := newLogger(cfg.LogLevel, logw)
	defer log.Sync()
	d, err := newDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	return body(d)
}

// run is Run's body: the built daemon until ctx ends.
func run(ctx context.Context, d *daemon, cfg *config.Config, reload func() (*config.Config, error), attach []func(*daemon)) error {
	log := d.log
	var err error
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
			d.metrics.Forged(d.conn)
		}
	}
	for _, f := range attach {
		f(d)
	}
	t0 := time.Now()
	done := d.table.ScanStart() // init's exits from here on (attach) are remembered against it
	started := t0               // kill rows signalled before this are an earlier run's
	scan, err := d.procs.Scan()
	if err != nil {
		done()
		return fmt.Errorf("initial /proc scan: %w", err)
	}
	t1 := time.Now()
	d.state.loadLeases() // before the merge: an extended agent is never queued at its bare max age
	d.table.Merge(scan, false)
	done()
	st := d.table.Stats()
	log.Info("initial scan", zap.Int("processes", st.Processes), zap.Int("agents", st.Agents),
		zap.Duration("took", time.Since(t0)), zap.Duration("read", t1.Sub(t0)), zap.Duration("merge", time.Since(t1)))
	d.state.restoreSessions()
	// Kill rows an earlier run left pending: completed here, or by this
	// run's kill under the same id, before any of this run's is recorded.
	var db pendingSource
	if d.db != nil {
		db = d.db
	}
	resume := newResumer(d.rec.ids, d.store, db, log, started, scan)
	resume.fromSpool()
	ctl, err := d.serveControl(reload)
	if err != nil {
		return err
	}
	defer ctl.Close() // on an early return; a no-op once closed
	// /agents, /events and the rest for root and the control group.
	apiL, err := d.api.ServeAPI()
	if err != nil {
		return err
	}
	defer apiL.Stop() // on an early return; a no-op once stopped

	// /healthz answers 503 until ready.
	var web *api.Listener
	if cfg.Listen != "" || cfg.MetricsListen != "" {
		if web, err = d.api.ServeHTTP(); err != nil {
			return err
		}
		defer web.Stop() // on an early return; a no-op once stopped
	}
	// Under reloadMu: a reload through the control socket (already
	// serving) reads d.pressure.
	reloadMu.Lock()
	d.pressure, err = startPressure(d)
	reloadMu.Unlock()
	if err != nil { // policies.go: the PSI trigger
		return err
	}
	// Every goroutine run starts is joined before it returns, in the
	// order of the shutdown below.
	timerDone := spawn(d.timer.Run)
	storeCtx, stopStore := context.WithCancel(context.Background())
	defer stopStore()
	storeDone := spawn(func() { d.store.Run(storeCtx) })
	resumeDone := spawn(func() { resume.fromDatabase(storeCtx) })
	// Intake and the periodic work outlive ctx: in-flight kills need the
	// table to see their trees' exits.
	intake, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	loopDone := spawn(func() {
		if d.conn != nil {
			d.eventLoop(intake)
		} else {
			d.pollLoop(intake)
		}
	})
	sumDone := spawn(func() { d.summarise(intake) })
	rateDone := spawn(func() { d.sampleRate(intake) })
	persistDone := spawn(func() { d.state.persistSessions(intake) })
	reloadMu.Lock()
	d.res.Arm() // the fork-time process limit, before ready
	reloadMu.Unlock()
	resDone := spawn(func() { d.res.Run(intake) })
	hupDone := d.reloadOnHUP(intake, reload)

	d.ready.Store(true)
	d.logReady(web, apiL)
	if d.afterReady != nil {
		d.afterReady()
	}

	<-ctx.Done()
	log.Info("shutting down")
	// 1. The endpoints: their handlers read the deadline thread, which
	// Stop frees. The event streams end first, or stop would wait for them.
	d.events.Close()
	web.Stop()
	apiL.Stop()
	// Then the control socket: no command queues a kill past this point.
	ctl.Close()
	d.pressure.Stop() // nor any memory pressure trigger
	// 2. No deadline fires any more; agents already signalled are handed
	// to the reaper.
	d.timer.Stop()
	<-timerDone
	// 3. In-flight kills finish (half-killed trees help no one) while events
	// still flow: the reaper waits for the table to see each tree's exits.
	d.reaper.Wait()
	// Their hooks get the rest of their timeout, at most hookStopBound.
	d.hooks.Stop(hookStopBound)
	// 4. Intake, snapshots, reloads.
	stopIntake()
	if d.conn != nil {
		_ = d.conn.Interrupt()
	}
	<-loopDone
	<-sumDone
	<-rateDone
	<-persistDone
	<-resDone
	<-hupDone
	// Nothing feeds the table any more: its /proc retry timer goes too.
	d.table.Close()
	// 5. The store: what is spooled goes to PostgreSQL within a bound; what
	// is not delivered stays in the spool for the next start.
	stopStore()
	<-storeDone
	<-resumeDone
	if d.store.HasDatabase() {
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
	log.Info("stopped")
	return nil
}

// spawn runs f in a goroutine and returns a channel closed when it returns.
func spawn(f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return done
}

// reloadOnHUP applies a new configuration on every SIGHUP until ctx ends.
func (d *daemon) reloadOnHUP(ctx context.Context, reload func() (*config.Config, error)) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return spawn(func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = d.reloadNow(reload)
			}
		}
	})
}

func (d *daemon) logReady(web, apiL *api.Listener) {
	cfg := d.cfg
	fields := []zap.Field{
		zap.String("source", d.source), zap.String("listen", ""),
		zap.Duration("max_age", cfg.MaxAge), zap.Duration("kill_grace", cfg.KillGrace),
		zap.Stringers("agents", cfg.Agents), zap.Stringers("under", cfg.Under),
		zap.Bool("dry_run", cfg.DryRun), zap.Int("pid", os.Getpid()), zap.String("host", cfg.HostID),
		zap.Bool("database", cfg.DatabaseURL != ""), zap.String("state_dir", cfg.StateDir),
		zap.Bool("realtime_timer", d.timer.RT()), zap.Bool("on_kill", cfg.OnKill != ""),
	}
	if web != nil {
		fields[1] = zap.String("listen", web.Addr())
	}
	if apiL != nil {
		fields = append(fields, zap.String("api_socket", apiL.Addr()))
	}
	if d.conn != nil {
		fields = append(fields, zap.Int("rcvbuf", d.conn.ReadBuffer()))
	}
	warnCgroupNamespace(d.log, d.procs, d.cfg)
	d.log.Info("ready", fields...)
}

// reloadMu makes a reload by SIGHUP and one by the control socket take
// turns.
var reloadMu sync.Mutex

// reloadNow is what SIGHUP does: read the configuration again and put it
// in force, or keep the old one and say why.
func (d *daemon) reloadNow(reload func() (*config.Config, error)) error {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	n, err := reload()
	if err != nil {
		// config.Parse's errors never hold a password.
		d.log.Error("reload rejected; the old configuration stays in force", zap.String("error", err.Error()))
		return err
	}
	d.applyReload(n)
	d.pressure.Reload(pressureSettings(n)) // internal/policy/pressure
	return nil
}

// serveControl starts the control socket (nil when disabled).
func (d *daemon) serveControl(reload func() (*config.Config, error)) (*control.Server, error) {
	if n := d.table.PruneLeases(); n > 0 {
		d.log.Info("leases restored", zap.Int("processes", n))
	}
	d.state.resaveLeases()
	if d.cfg.ControlSocket == "" {
		return nil, nil
	}
	c := &controller{table: lagging{d.table, d.procs.Stat}, clock: d.clock, allow: d.guard.Allowed, dryRun: d.cfg.DryRun, save: d.state.saveLeases, stat: d.procs.Stat,
		reload: func() error { return d.reloadNow(reload) }}
	s, err := control.Listen(control.Config{Path: d.cfg.ControlSocket, Group: d.cfg.ControlGID, Handler: c.handle,
		Log: d.log.Named("control")})
	if err != nil {
		return nil, err
	}
	d.log.Info("control socket", zap.String("path", s.Path()), zap.String("group", d.cfg.ControlGroup))
	return s, nil
}

// summaryInterval is the snapshot period in force (the last SIGHUP's), which
// each health row records as summary_interval_s: the fleet view calls a
// host silent after three of its own intervals without a row. For `once`
// it is --summary-interval as given, which then says how often cron runs
// it (the default 5m is the seed job's schedule).
func (d *daemon) summaryInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live.SummaryInterval
}

// restartChanges says, for every option a reload does not apply
// (config.NeedRestart), whether it changed.
func restartChanges(n, old *config.Config) map[string]bool {
	return map[string]bool{
		"source": n.Source != old.Source, "listen": n.Listen != old.Listen, "state-dir": n.StateDir != old.StateDir,
		"database-url": n.DatabaseURL != old.DatabaseURL, "host-id": n.HostID != old.HostID, "dry-run": n.DryRun != old.DryRun,
		"realtime": n.Realtime != old.Realtime, "netlink-rcvbuf": n.NetlinkRcvbuf != old.NetlinkRcvbuf,
		"poll-interval": n.PollInterval != old.PollInterval, "retention": n.Retention != old.Retention,
		"spool-max-rows": n.SpoolMaxRows != old.SpoolMaxRows, "log-level": n.LogLevel != old.LogLevel,
		"control-socket": n.ControlSocket != old.ControlSocket, "control-group": n.ControlGID != old.ControlGID,
		"event-buffer": n.EventBuffer != old.EventBuffer, "forward-to": n.ForwardGroup != old.ForwardGroup, "metrics-listen": n.MetricsListen != old.MetricsListen,
		"database-url-file": n.DatabaseURLFile != old.DatabaseURLFile, "host-cgroup-root": n.HostCgroupRoot != old.HostCgroupRoot,
		"api-socket": n.APISocket != old.APISocket, "db-statement-timeout": n.DBStatementTimeout != old.DBStatementTimeout,
	}
}
