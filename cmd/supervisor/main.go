// Command supervisor keeps AI-agent containers healthy: it follows every
// process through the kernel's proc connector and kills each stale agent,
// with its whole process tree, the moment it crosses its maximum age.
//
// This file is the whole command: it picks the subcommand and calls into
// internal/ (daemon: run, once, init; cli: the clients of a running daemon
// and of its database; config: flags, environment and help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cli"
	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/daemon"
)

var version = "dev"

const commands = "run, init, once, status, health, events, history, fleet, migrate, extend, keep, unkeep, kill, reload, version"

const usage = `usage: supervisor COMMAND [flags]

commands:
  run       start the daemon
  init [flags] -- CMD [ARGS...]
            the daemon as a container's init: run CMD as its child, reap
            every orphan, forward signals (--forward-to child|group), end
            what CMD left when it exits, exit with CMD's status
  once      one scan, kill stale agents, one health row, the seed's JSON
            on stdout (a drop-in for the process-reaper.js cron job)
  status    ask the running daemon what it tracks (its API socket:
            --api-socket PATH, or beside --control-socket PATH)
  health    GET /healthz on the running daemon's API socket and print it:
            exit 0 when ready, 1 when not or when nothing answers within
            --timeout (default 3s); the Kubernetes probes run it
  events    follow the running daemon's event stream (--json, --types,
            --api-socket PATH)
  history   recent snapshots and kills (--since DUR, --json), from
            PostgreSQL when configured, else from the spool
  fleet     one line per host from PostgreSQL (tel.fleet): last snapshot,
            status, agents, zombies, free memory, kills in 24 h; SILENT
            after 3 summary intervals without a snapshot (--json)
  migrate   create or update the tables (--database-url) and exit; run it
            with an owner role so the daemon's role needs no DDL rights
  extend PID DURATION | extend PID --until TIME
            give an agent more time (a lease), kept across reloads and
            restarts, ending with the process
  keep PID  exempt a process and its descendants from every policy
            but a manual kill
  unkeep PID  make it subject to the policies again
  kill PID [--force]
            kill that agent's session now (reason manual); --force for a
            process that is neither an agent nor a session member
            (PID@START, START as /agents shows it, in place of PID in
            extend, keep, unkeep and kill: refused if PID is now another
            process)
  reload    what SIGHUP does; prints ok or the error
            (these five talk to the daemon's --control-socket, root only;
            status, health and events read the API socket beside it, root
            or --control-group)
  version   print the version

run, init, once, history, fleet and migrate take the same flags:

`

func main() {
	os.Exit(mainErr(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func mainErr(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "supervisor: no command given (want one of: %s); see supervisor --help\n", commands)
		return 2
	}
	cmd, rest := args[0], args[1:]
	extra := func(*flag.FlagSet) {} // a subcommand's own flags
	var since time.Duration
	var asJSON bool
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		config.PrintUsage("run", stdout, flag.NewFlagSet("run", flag.ContinueOnError))
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "supervisor %s %s\n", buildVersion(), runtime.Version())
		return 0
	case "status":
		return cli.Status(rest, getenv, stdout, stderr)
	case "health":
		return cli.Health(rest, getenv, stdout, stderr)
	case "init":
		// Signals are forwarded, not obeyed: init stops when CMD exits.
		return daemon.Init(rest, getenv, stdout, stderr)
	case "extend", "keep", "unkeep", "kill", "reload":
		return cli.Control(cmd, rest, getenv, stdout, stderr)
	case "events":
		return cli.Events(rest, getenv, stdout, stderr)
	case "fleet":
		return cli.Fleet(rest, getenv, stdout, stderr)
	case "history":
		extra = func(fs *flag.FlagSet) {
			fs.DurationVar(&since, "since", 24*time.Hour, "how far back")
			fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
		}
	case "run", "once", "migrate":
	default:
		fmt.Fprintf(stderr, "supervisor: unknown command %q (want one of: %s)\n", cmd, commands)
		return 2
	}
	cfg, err := config.Parse(cmd, rest, getenv, stdout, extra)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	if cmd == "migrate" && cfg.DatabaseURL == "" {
		fmt.Fprintf(stderr, "supervisor: migrate: no database given (--database-url or DATABASE_URL)\n")
		return 2
	}
	if cmd == "history" && since <= 0 {
		fmt.Fprintf(stderr, "supervisor: --since: must be positive\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch cmd {
	case "once":
		err = daemon.Once(ctx, cfg, stdout, stderr)
	case "migrate":
		err = cli.Migrate(ctx, cfg, stdout)
	case "history":
		err = cli.History(ctx, cfg, since, asJSON, stdout, stderr)
	default:
		// SIGHUP re-reads the environment and the --config file; the flags
		// given at start stay.
		reload := func() (*config.Config, error) { return config.Parse(cmd, rest, getenv, io.Discard) }
		err = daemon.Run(ctx, cfg, stderr, reload)
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 1
	}
	return 0
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}
