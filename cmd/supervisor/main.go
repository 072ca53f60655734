// Command supervisor keeps AI-agent containers healthy: it follows every
// process through the kernel's proc connector and kills each stale agent,
// with its whole process tree, the moment it crosses its maximum age.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

var version = "dev"

const commands = "run, once, version"

func main() {
	os.Exit(mainErr(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func mainErr(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "supervisor: no command given (want one of: %s); see supervisor run --help\n", commands)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprintf(stdout, "usage: supervisor COMMAND [flags]\n\ncommands:\n  run       start the daemon\n  once      one scan, kill stale agents, one health row, the seed's JSON (a drop-in for the cron job)\n  version   print the version\n\nrun and once take the same flags:\n\n")
		printUsage("run", stdout)
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "supervisor %s %s\n", buildVersion(), runtime.Version())
		return 0
	case "run", "once":
	default:
		fmt.Fprintf(stderr, "supervisor: unknown command %q (want one of: %s)\n", cmd, commands)
		return 2
	}
	cfg, err := parseConfig(cmd, rest, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	do := run
	if cmd == "once" {
		do = func(ctx context.Context, cfg *Config, logw io.Writer) error { return once(ctx, cfg, stdout, logw) }
	}
	if err := do(ctx, cfg, stderr); err != nil {
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
