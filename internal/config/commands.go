package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// command is a subcommand: what --help, the man page and
// docs/configuration.md say of it, and its own flags. The daemon options
// (options) are not repeated here: daemon says the command takes them.
type command struct {
	name     string
	synopsis string // the usage line after "supervisor "
	summary  string // what it does, in the command list
	more     string // said besides in its own --help, the man page and the docs
	daemon   bool   // takes the daemon options: its flag set comes from Parse
	flags    []cmdFlag
}

// flagKind is the type of a subcommand flag's value.
type flagKind int

const (
	kindString flagKind = iota
	kindBool
	kindDuration
)

// cmdFlag is a subcommand's own flag. Unlike a daemon option it has no
// environment twin and no config-file key; a client flag that falls back
// to a variable (--api-socket, --control-socket) says so in its help, the
// command reads it.
type cmdFlag struct {
	name, arg, def, help string // arg names the value in the help (PATH); "" for a boolean
	kind                 flagKind
	hidden               bool // accepted, not documented
	// only, on a flag shared by a group of commands, is the one command
	// it is for: the others accept it so as to refuse it by name ("--until
	// is for extend"), and do not document it.
	only string
}

// healthTimeoutDef is how long health waits for the daemon by default:
// below the DaemonSet probes' timeoutSeconds, so a slow answer is this
// command's failure, with its message, not the kubelet's timeout.
const healthTimeoutDef = "3s"

// apiClientFlags find the daemon's API socket (status, health, events) the
// way the control commands find the control socket.
var apiClientFlags = []cmdFlag{
	{name: "api-socket", arg: "PATH",
		help: "the daemon's API socket (env REAPER_API_SOCKET; default " + APISocketName + " beside the control socket)"},
	{name: "control-socket", arg: "PATH",
		help: "the daemon's control socket, whose directory holds the API socket (env REAPER_CONTROL_SOCKET, default " + DefaultControlSocket + ")"},
	// Before the API socket, status and events read --listen.
	{name: "listen", arg: "ADDRESS", hidden: true, help: "ignored: /agents and /events are no longer served over TCP"},
}

// controlFlags are the control commands': one flag set for the five, so
// that --until given to kill is refused as extend's.
var controlFlags = []cmdFlag{
	{name: "control-socket", arg: "PATH", def: DefaultControlSocket, help: "the daemon's control socket (env REAPER_CONTROL_SOCKET)"},
	{name: "until", arg: "TIME", only: "extend",
		help: "the new deadline, set outright (RFC 3339, YYYY-MM-DD HH:MM[:SS] or HH:MM[:SS] today, local time)"},
	{name: "force", kind: kindBool, only: "kill", help: "also a process that is neither an agent nor a session member (root only)"},
}

// pidStartNote is said of every control command that names a process.
const pidStartNote = "PID@START in place of PID names the process by identity: START is its start time as /agents shows it " +
	"(started_at, RFC 3339), and the daemon refuses the command if PID now belongs to another process."

// controlNote is said of every control command.
const controlNote = "It talks to the daemon's control socket: root, or a member of the daemon's --control-group. " +
	"Exit 1 when refused or when no daemon answers, 2 on a usage error."

// commands is every subcommand, in the order --help lists them.
var commands = []command{
	{name: "run", synopsis: "run [flags]", daemon: true,
		summary: "start the daemon",
		more: "It follows every process (proc connector, else /proc polling), kills each agent at its start + --max-age " +
			"with its process tree and its session's leftovers after --leftover-grace, enforces the session limits and " +
			"the memory pressure policy, and serves /healthz and /metrics on --listen and the control and API sockets. " +
			"SIGHUP re-reads the environment and the --config file; SIGTERM and SIGINT stop it."},
	{name: "init", synopsis: "init [flags] -- CMD [ARGS...]", daemon: true,
		summary: "the daemon as a container's init: run CMD as its child, reap every orphan, forward signals " +
			"(--forward-to child|group), end what CMD left when it exits, exit with CMD's status",
		more: "CMD starts first and never waits for the daemon. SIGTERM and SIGINT are forwarded to CMD, not obeyed: " +
			"init stops when CMD does. Exit 127 when CMD is not found, 126 when it cannot be run."},
	{name: "once", synopsis: "once [flags]", daemon: true,
		summary: "one scan, kill stale agents, one health row, the seed's JSON on stdout " +
			"(a drop-in for the process-reaper.js cron job)"},
	{name: "status", synopsis: "status [--api-socket PATH | --control-socket PATH]", flags: apiClientFlags,
		summary: "ask the running daemon what it tracks (its API socket: --api-socket PATH, or beside --control-socket PATH)",
		more: "One header, then one line per agent with how much of its max age is used, and the leftovers; it fits 80 columns. " +
			"The API socket is for root and members of the daemon's --control-group. Exit 1 when no daemon answers."},
	{name: "health", synopsis: "health [--api-socket PATH | --control-socket PATH] [--timeout DURATION]",
		flags: append(apiClientFlags[:len(apiClientFlags):len(apiClientFlags)],
			cmdFlag{name: "timeout", arg: "DURATION", def: healthTimeoutDef, kind: kindDuration, help: "how long to wait for the answer"}),
		summary: "GET /healthz on the running daemon's API socket and print it: exit 0 when ready, 1 when not or when " +
			"nothing answers within --timeout (default " + healthTimeoutDef + "); the Kubernetes probes run it",
		more: "Exit 2 on a usage error."},
	{name: "events", synopsis: "events [--json] [--types LIST] [--api-socket PATH | --control-socket PATH]",
		flags: append([]cmdFlag{
			{name: "json", kind: kindBool, help: "print each event as the daemon sends it, one JSON object per line"},
			{name: "types", arg: "LIST", help: "only these event types, comma-separated (" + eventTypes + ")"},
		}, apiClientFlags...),
		summary: "follow the running daemon's event stream (--json, --types, --api-socket PATH)",
		more:    "It reads GET /events on the API socket, one line per event, until interrupted or the stream ends."},
	{name: "top", synopsis: "top [--once] [--json] [--api-socket PATH | --control-socket PATH]",
		flags: []cmdFlag{
			{name: "once", kind: kindBool, help: "print one frame as plain text and exit (also when stdout is not a terminal)"},
			{name: "json", kind: kindBool, help: "print one JSON document (sessions with their members and figures, recent kills) and exit"},
			apiClientFlags[0],
			{name: "control-socket", arg: "PATH",
				help: "the daemon's control socket, for the actions (extend, keep, kill), whose directory holds the API socket " +
					"(env REAPER_CONTROL_SOCKET, default " + DefaultControlSocket + ")"},
			apiClientFlags[2],
		},
		summary: "a live full-screen view of every agent session (its API socket), with extend, keep and kill at hand " +
			"(its control socket); --once or a pipe prints one frame, --json one document",
		more: "Keys: up/down or j/k move, enter expands or folds a session's members, / filters (enter applies, escape clears), " +
			"s cycles the sort (LEFT, MEM, CPU, AGE), e extends (a duration, default 30m), K keeps or unkeeps, x kills after y, " +
			"? shows the keys, q or ctrl-c quits. It refreshes once a second and follows /events for kills. A refused action " +
			"(not root, not in the daemon's --control-group) is said on its status line; without the control socket it is read-only. " +
			"NO_COLOR is respected. Exit 1 when no daemon answers, 2 on a usage error."},
	{name: "history", synopsis: "history [--since DURATION] [--json] [flags]", daemon: true,
		flags: []cmdFlag{
			{name: "since", arg: "DURATION", def: "24h", kind: kindDuration, help: "how far back"},
			{name: "json", kind: kindBool, help: "print JSON instead of a table"},
		},
		summary: "recent snapshots and kills (--since DUR, --json), from PostgreSQL when configured, else from the spool"},
	{name: "fleet", synopsis: "fleet [--json] [--fail-silent] [flags]", daemon: true,
		flags: []cmdFlag{
			{name: "json", kind: kindBool, help: "print JSON instead of a table"},
			{name: "fail-silent", kind: kindBool, help: "exit 3 when a host is SILENT"},
		},
		summary: "one line per host from PostgreSQL (tel.fleet): last snapshot, status, agents, zombies, free memory, " +
			"kills in 24 h; SILENT after 3 summary intervals without a snapshot (--json)",
		more: "It needs a database (--database-url-file or --database-url): the fleet is what the hosts wrote there."},
	{name: "migrate", synopsis: "migrate [flags]", daemon: true,
		summary: "create or update the tables (--database-url) and exit; run it with an owner role so the daemon's role " +
			"needs no DDL rights"},
	pidCommand("extend", "extend PID[@START] DURATION | extend PID[@START] --until TIME [--control-socket PATH]",
		"give an agent more time (a lease), kept across reloads and restarts, ending with the process"),
	pidCommand("keep", "keep PID[@START] [--control-socket PATH]",
		"exempt a process and its descendants from every policy but a manual kill"),
	pidCommand("unkeep", "unkeep PID[@START] [--control-socket PATH]",
		"make a kept process subject to the policies again"),
	pidCommand("kill", "kill PID[@START] [--force] [--control-socket PATH]",
		"kill that agent's session now (reason manual); --force for a process that is neither an agent nor a session member"),
	{name: "reload", synopsis: "reload [--control-socket PATH]", flags: controlFlags,
		summary: "what SIGHUP does; prints ok or the error",
		more:    controlNote},
	{name: "version", synopsis: "version", summary: "print the version"},
}

// pidCommand is a control command that names a process.
func pidCommand(name, synopsis, summary string) command {
	return command{name: name, synopsis: synopsis, flags: controlFlags, summary: summary, more: pidStartNote + " " + controlNote}
}

// eventTypes are the event stream's types, for --types' help (a test holds
// it to events.All).
const eventTypes = "agent,deadline,leftover,kill,snapshot,resync,pressure,lost"

func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// documented is the flags of c that its help and docs list.
func (c *command) documented() []cmdFlag {
	var out []cmdFlag
	for _, f := range c.flags {
		if !f.hidden && (f.only == "" || f.only == c.name) {
			out = append(out, f)
		}
	}
	return out
}

// CommandNames lists the subcommands, comma-separated, for the message
// that names the ones there are.
func CommandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// Synopsis is cmd's usage line after "supervisor ".
func Synopsis(cmd string) string {
	if c := lookupCommand(cmd); c != nil {
		return c.synopsis
	}
	return cmd + " [flags]"
}

// NewFlagSet is cmd's own flags, as the commands table defines them, for a
// command that takes no daemon options; Parse adds them for the others.
// Errors are not printed: the command says them its way.
func NewFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineFlags(fs, cmd)
	return fs
}

func defineFlags(fs *flag.FlagSet, cmd string) {
	if c := lookupCommand(cmd); c != nil {
		for _, f := range c.flags {
			defineFlag(fs, cmd, f)
		}
	}
}

func defineFlag(fs *flag.FlagSet, cmd string, f cmdFlag) {
	var v flag.Value
	switch f.kind {
	case kindBool:
		v = &value[bool]{p: new(bool), parse: strconv.ParseBool, isBool: true}
	case kindDuration:
		v = &value[time.Duration]{p: new(time.Duration), parse: time.ParseDuration}
	default:
		v = &value[string]{p: new(string), parse: func(s string) (string, error) { return s, nil }}
	}
	if f.def != "" {
		if err := v.Set(f.def); err != nil {
			panic(fmt.Sprintf("config: %s --%s: default %q: %v", cmd, f.name, f.def, err))
		}
	}
	fs.Var(v, f.name, f.help)
}

// value is a subcommand flag's value. Its error is the flag package's own,
// so that a bad value reads as it always has.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	isBool bool // may stand alone: --json
}

var errParse = errors.New("parse error")

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return errParse
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return fmt.Sprint(*v.p)
}

func (v *value[T]) IsBoolFlag() bool { return v.isBool }

// lookupValue is the variable of fs's flag name, defined from the
// commands table (fs's name is the command's) if fs does not have it yet.
// Asking for a flag the table does not give the command, or as another
// type, is a programming error.
func lookupValue[T any](fs *flag.FlagSet, name string) *value[T] {
	f := fs.Lookup(name)
	if f == nil {
		if c := lookupCommand(fs.Name()); c != nil {
			for _, cf := range c.flags {
				if cf.name == name {
					defineFlag(fs, c.name, cf)
				}
			}
		}
		if f = fs.Lookup(name); f == nil {
			panic(fmt.Sprintf("config: %s has no flag --%s in the commands table", fs.Name(), name))
		}
	}
	v, ok := f.Value.(*value[T])
	if !ok {
		panic(fmt.Sprintf("config: %s --%s is not a %T", fs.Name(), name, v))
	}
	return v
}

// String, Bool and Duration are the variables of fs's flag name, as the
// table defines it: read them after fs.Parse.
func String(fs *flag.FlagSet, name string) *string { return lookupValue[string](fs, name).p }
func Bool(fs *flag.FlagSet, name string) *bool     { return lookupValue[bool](fs, name).p }
func Duration(fs *flag.FlagSet, name string) *time.Duration {
	return lookupValue[time.Duration](fs, name).p
}

// BoolVar and DurationVar make p the variable of fs's flag name, holding
// its default until fs.Parse sets it: for Parse's extra functions.
func BoolVar(fs *flag.FlagSet, p *bool, name string) { bind(lookupValue[bool](fs, name), p) }

func DurationVar(fs *flag.FlagSet, p *time.Duration, name string) {
	bind(lookupValue[time.Duration](fs, name), p)
}

func bind[T any](v *value[T], p *T) { *p, v.p = *v.p, p }

// ParseFlags parses args into fs, a command's flag set from NewFlagSet:
// --help prints the command's help on stdout, a bad flag one line on
// stderr. done says the command ends there, with status code: 0 after the
// help, 2 after an error.
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		PrintHelp(stdout, fs.Name())
		return 0, true
	}
	fmt.Fprintf(stderr, "supervisor: %s\n", FlagError(err))
	return 2, true
}

// FlagError is the flag package's error as the commands say it: an
// unknown flag named with its two dashes.
func FlagError(err error) string {
	return strings.Replace(err.Error(), "flag provided but not defined: -", "unknown flag --", 1)
}
