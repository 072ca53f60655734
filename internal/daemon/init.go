package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/initd"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// `supervisor init [flags] -- CMD [ARGS...]`: the daemon as a container's
// init (internal/initd). CMD starts first and never waits for the daemon
// (nor for the database, which the store reaches lazily); the daemon runs
// as under `run` until CMD has exited and what it left is gone; the exit
// status is CMD's. SIGTERM and SIGINT are forwarded to CMD, not obeyed:
// init stops when CMD does.

// splitInit cuts init's arguments at the first "--": the daemon's flags
// before it, the command after it.
func splitInit(args []string) (flags, argv []string, ok bool) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:], true
		}
	}
	return args, nil, false
}

// initMode is what the init wiring shares with the daemon once it runs.
type initMode struct {
	in  *initd.Init
	cfg *config.Config
	d   atomic.Pointer[daemon]
}

// grace is --kill-grace as in force now: a reload may have changed it.
func (m *initMode) grace() time.Duration {
	d := m.d.Load()
	if d == nil {
		return m.cfg.KillGrace
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live.KillGrace
}

// attach wires init into the daemon before its first scan: hooks are
// children os/exec reaps, not the init reaper; when polling /proc, the
// table learns of each reaped child's exit at once.
func (m *initMode) attach(d *daemon) {
	m.d.Store(d)
	d.hooks.SetRegistry(m.in)
	// Up and running, an init gives back the pages of its binary that only
	// start-up used: most of its resident memory (internal/initd, pages_linux.go).
	d.afterReady = func() {
		n, err := initd.ReleaseStartupPages()
		d.log.Debug("start-up pages released", zap.Int64("mapped_bytes", n), zap.Error(err))
	}
	if d.source == "proc" {
		// With the proc connector (a host PID namespace) exit events are
		// as prompt and cover every process.
		m.in.SetOnExit(func(pid int32) { d.table.Exited(pid, d.clock.Now()) })
	}
}

// Init is `supervisor init [flags] -- CMD [ARGS...]`: the daemon as a
// container's init (internal/initd runs CMD, reaps and forwards signals),
// returning CMD's exit code, or 2 on a usage error.
func Init(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	initd.CatchEarly()
	flags, argv, dashes := splitInit(args)
	cfg, err := config.Parse("init", flags, getenv, stdout)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: init: %v\n", err)
		return 2
	}
	switch {
	case !dashes:
		fmt.Fprintf(stderr, "supervisor: init: no command: want supervisor init [flags] -- CMD [ARGS...]\n")
		return 2
	case len(argv) == 0 || argv[0] == "":
		fmt.Fprintf(stderr, "supervisor: init: no command after --: want supervisor init [flags] -- CMD [ARGS...]\n")
		return 2
	}
	log := newLogger(cfg.LogLevel, stderr)
	defer log.Sync()
	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: init: %v\n", err)
		return 1
	}
	m := &initMode{cfg: cfg}
	m.in, err = initd.Start(initd.Config{Argv: argv, Forward: forwardTo(cfg), Grace: m.grace, Procs: procs, Log: log.Named("init")})
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: init: %v\n", err)
		return initd.StartCode(err)
	}
	defer m.in.Close()
	cfg.InitPID = m.in.PID() // the sessions' cgroup, for the pressure file (internal/policy/pressure)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.in.Done()
		cancel()
	}()
	reload := func() (*config.Config, error) { return config.Parse("init", flags, getenv, io.Discard) }
	if err := Run(ctx, cfg, stderr, reload, m.attach); err != nil {
		// The command is the container's reason to be: it keeps its init
		// (reaping, signals, the end) without the supervisor.
		log.Error("the supervisor stopped; still the command's init", zap.Error(err))
		<-m.in.Done()
	}
	st := m.in.Stats()
	log.Info("init exits", zap.Int("status", m.in.Status()), zap.Uint64("reaped", st.Reaped),
		zap.Uint64("forwarded", st.Forwarded), zap.Uint64("terminated", st.Terminated))
	return m.in.Status()
}

// forwardTo is where init forwards signals, as --forward-to says.
func forwardTo(cfg *config.Config) initd.Forward {
	if cfg.ForwardGroup {
		return initd.ForwardGroup
	}
	return initd.ForwardChild
}
