package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/tracker"
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
// the HTTP handlers can read it.
type daemon struct {
	cfg    *Config
	log    *zap.Logger
	clock  tracker.Clock
	procs  *tracker.ProcFS
	table  *tracker.Table
	reaper *reap.Reaper
	timer  *reap.Timer
	conn   *procevents.Conn // nil when polling

	source string
	ready  atomic.Bool
}

func run(ctx context.Context, cfg *Config, logw io.Writer) error {
	log := newLogger(cfg.LogLevel, logw)
	defer log.Sync()

	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		return err
	}
	guard, err := reap.NewGuard(procs)
	if err != nil {
		return err
	}
	d := &daemon{cfg: cfg, log: log, clock: tracker.SystemClock{}, procs: procs}
	q := &tracker.Deadlines{}
	d.table = tracker.NewTable(tracker.Config{
		Rules: cfg.Agents, Under: cfg.Under, MaxAge: cfg.MaxAge,
		Proc: procs, Clock: d.clock, Pin: reap.Pinner(procs), Queue: q,
		Log: log.Named("tracker"),
	})
	d.reaper = reap.New(reap.Config{
		Grace: cfg.KillGrace, DryRun: cfg.DryRun, Tree: d.table, Procs: procs,
		Clock: d.clock, Guard: guard, Log: log.Named("reap"),
	})
	d.timer, err = reap.NewTimer(reap.TimerConfig{
		Queue: q, Clock: d.clock, Guard: guard, DryRun: cfg.DryRun, Realtime: cfg.Realtime, Fire: d.reaper.Fire,
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
		d.conn, err = procevents.Dial(procevents.Config{ReadBuffer: cfg.NetlinkRcvbuf})
		switch {
		case err != nil && d.source == "netlink":
			return fmt.Errorf("event source netlink: %w", err)
		case err != nil:
			log.Warn("proc connector unavailable, falling back to polling /proc: agents are discovered up to one poll interval late, deadlines stay exact",
				zap.Error(err), zap.Duration("poll_interval", cfg.PollInterval))
			d.source = "proc"
		default:
			d.source = "netlink"
		}
	}
	t0 := time.Now()
	scan, err := procs.Scan()
	if err != nil {
		return fmt.Errorf("initial /proc scan: %w", err)
	}
	d.table.Merge(scan, false)
	st := d.table.Stats()
	log.Info("initial scan", zap.Int("processes", st.Processes), zap.Int("agents", st.Agents),
		zap.Duration("took", time.Since(t0)))

	timerDone := make(chan struct{})
	go func() {
		d.timer.Run()
		close(timerDone)
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

	d.ready.Store(true)
	fields := []zap.Field{
		zap.String("source", d.source), zap.String("listen", addr),
		zap.Duration("max_age", cfg.MaxAge), zap.Duration("kill_grace", cfg.KillGrace),
		zap.Stringers("agents", cfg.Agents), zap.Stringers("under", cfg.Under),
		zap.Bool("dry_run", cfg.DryRun), zap.Int("pid", os.Getpid()),
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
	d.timer.Stop()
	<-timerDone
	d.reaper.Wait() // in-flight kills finish: half-killed trees help no one
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
	scan, err := d.procs.Scan()
	if err != nil {
		d.log.Error("resync: scan /proc", zap.Error(err))
		return
	}
	d.table.Merge(scan, true)
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
	return mux
}

type health struct {
	Status     string `json:"status"`
	Source     string `json:"source"`
	Processes  int    `json:"processes"`
	Agents     int    `json:"agents"`
	Events     uint64 `json:"events"`
	EventsLost uint64 `json:"events_lost"`
	Overruns   uint64 `json:"overruns"`
	Resyncs    uint64 `json:"resyncs"`
	BadMsgs    uint64 `json:"bad_messages"`
	Rcvbuf     int    `json:"rcvbuf,omitempty"`
	Realtime   bool   `json:"realtime_timer"`
	DryRun     bool   `json:"dry_run"`
}

func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	st := d.table.Stats()
	h := health{Status: "ok", Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Resyncs: st.Resyncs, Realtime: d.timer.RT(), DryRun: d.cfg.DryRun}
	for _, n := range st.Events {
		h.Events += n
	}
	if d.conn != nil {
		cs := d.conn.Stats()
		h.EventsLost, h.Overruns, h.BadMsgs, h.Rcvbuf = cs.Lost, cs.Overruns, cs.Bad, d.conn.ReadBuffer()
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
