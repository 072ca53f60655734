// Command supervisor keeps AI-agent containers healthy: it follows every
// process through the kernel's proc connector and kills each stale agent,
// with its whole process tree, the moment it crosses its maximum age.
//
// This file is the whole command: it picks the subcommand and calls into
// internal/ (daemon: run, once, init; cli: the clients of a running daemon
// and of its database; top: the live view; config: flags, environment
// and help).
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
	"github.com/agent-supervisor/supervisor/internal/top"
)

// version and commit are set at link time (-X main.version=..., -X
// main.commit=...: scripts/lib/build.sh) to `git describe` of the checkout
// and its commit; a plain go build says dev and the commit Go stamped.
var (
	version = "dev"
	commit  = ""
)

// commands names the subcommands, for the message that lists them.
var commands = config.CommandNames()

// clients are the subcommands that parse their own flags and run alone:
// the clients of a running daemon, and init (which forwards signals, not
// obeys them: it stops when CMD exits).
var clients = map[string]func(args []string, getenv func(string) string, stdout, stderr io.Writer) int{
	"status": cli.Status,
	"health": cli.Health,
	"init":   daemon.Init,
	"events": cli.Events,
	"fleet":  cli.Fleet,
	"top":    top.Run,
}

func main() {
	os.Exit(mainErr(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func mainErr(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "supervisor: no command given (want one of: %s); see supervisor --help\n", commands)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if run, ok := clients[cmd]; ok {
		return run(rest, getenv, stdout, stderr)
	}
	extra := func(*flag.FlagSet) {} // a subcommand's own flags
	var since time.Duration
	var asJSON bool
	switch cmd {
	case "-h", "--help", "help":
		config.PrintHelp(stdout, "")
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "supervisor %s %s\n", buildVersion(), runtime.Version())
		if commit != "" {
			fmt.Fprintf(stdout, "commit %s\n", commit)
		}
		return 0
	case "extend", "keep", "unkeep", "kill", "reload":
		return cli.Control(cmd, rest, getenv, stdout, stderr)
	case "history":
		extra = func(fs *flag.FlagSet) {
			config.DurationVar(fs, &since, "since")
			config.BoolVar(fs, &asJSON, "json")
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
