package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
)

var version = "dev"

// commands names the subcommands, for the message that lists them.
var commands = config.CommandNames()

// Main runs the command line args and returns the exit code.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return mainErr(args, getenv, stdout, stderr)
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
		config.PrintHelp(stdout, "")
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "supervisor %s %s\n", buildVersion(), runtime.Version())
		return 0
	case "status":
		return statusCmd(rest, getenv, stdout, stderr)
	case "health":
		return healthCmd(rest, getenv, stdout, stderr)
	case "init":
		// Signals are forwarded, not obeyed: init stops when CMD exits.
		return initCmd(rest, getenv, stdout, stderr)
	case "extend", "keep", "unkeep", "kill", "reload":
		return controlCmd(cmd, rest, getenv, stdout, stderr)
	case "events":
		return eventsCmd(rest, getenv, stdout, stderr)
	case "fleet":
		return fleetCmd(rest, getenv, stdout, stderr)
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
		err = once(ctx, cfg, stdout, stderr)
	case "migrate":
		err = migrate(ctx, cfg, stdout)
	case "history":
		err = history(ctx, cfg, since, asJSON, stdout, stderr)
	default:
		// SIGHUP re-reads the environment and the --config file; the flags
		// given at start stay.
		reload := func() (*config.Config, error) { return config.Parse(cmd, rest, getenv, io.Discard) }
		err = run(ctx, cfg, stderr, reload)
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
