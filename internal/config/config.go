package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Config is everything the daemon is told, parsed and checked before
// anything runs.
type Config struct {
	MaxAge          time.Duration
	KillGrace       time.Duration
	Agents          []tracker.Rule
	Under           []tracker.Ancestor
	HostCgroupRoot  string // the host's cgroup hierarchy, read in a private cgroup namespace (internal/daemon/cgns.go)
	Leftovers       string // kill or keep
	LeftoverGrace   time.Duration
	Keep            []tracker.Rule
	KeepEnv         bool // REAPER_KEEP=1 in a process's environment is honoured
	SummaryInterval time.Duration
	DatabaseURL     string
	DatabaseURLFile string // where DatabaseURL was read from, if a file
	StateDir        string
	Listen          string
	MetricsListen   string // /metrics and /healthz alone, for a Prometheus elsewhere (internal/api)
	Source          string
	PollInterval    time.Duration
	DryRun          bool
	Realtime        bool
	NetlinkRcvbuf   int
	LogLevel        string
	HostID          string
	Retention       time.Duration
	SpoolMaxRows    int
	// DBStatementTimeout is the server's statement_timeout for the
	// daemon's writes (internal/store).
	DBStatementTimeout time.Duration
	ConfigFile         string
	// The control socket (internal/daemon/control.go): its path ("" disables it) and the
	// group whose members may use it besides root (ControlGID -1: none).
	ControlSocket string
	ControlGroup  string
	ControlGID    int
	EventBuffer   int           // events each /events client may have waiting
	OnKill        string        // shell command run after each finished kill; "" for none
	ForwardGroup  bool          // supervisor init: forwarded signals go to CMD's process group (--forward-to group), else to CMD alone
	HookTimeout   time.Duration // per hook run (a test knob)

	// APISocket serves /agents, /events, /healthz and /metrics to the
	// control socket's peers (internal/api); "" disables it.
	APISocket string

	// The resource guard (internal/policy/limits): limits per session, 0 is off.
	SessionMaxMemory int64 // bytes
	SessionMaxProcs  int
	SessionIdle      time.Duration
	ResourceInterval time.Duration

	// The seed's warning thresholds (used by health snapshots).
	ZombieWarnThreshold int
	FreeMemWarnMB       int
	SwapWarnPct         float64

	// Memory pressure (internal/policy/pressure): the PSI trigger (nil:
	// off), the minimum age of a session it may kill and the pause after
	// each kill.
	Pressure     *psi.Spec
	PressureFile string // --pressure-file: the pressure file, not chosen by psi.Locate
	// InitPID is supervisor init's command (set by initCmd, no flag): its
	// cgroup decides whether the daemon's memory limit is the sessions'
	// too (psi.Locate). 0 under run.
	InitPID          int
	PressureMinAge   time.Duration
	PressureCooldown time.Duration
}

// DefaultListen is loopback: the endpoints are for the host's operators and
// tests, not the network.
const DefaultListen = "127.0.0.1:9847"

// option is one setting: a flag, its environment twin (also its key in
// the --config file) and its default. Precedence: flag, then environment,
// then the file, then default. help is plain text, for --help and the man
// page; doc, if set, says it in Markdown for docs/configuration.md (links,
// code), else help stands there too.
type option struct {
	flag, env, def, help string
	doc                  string
	shown                string // the default as the help and docs say it, if not def itself ("the hostname")
	repeat               bool   // flag may repeat; env is comma-separated
	hidden               bool   // a test knob: in no help, man page or doc
	restart              bool   // a reload does not apply it (the daemon logs it as needing a restart)
	set                  func(c *Config, v string, many []string) error
}

var options = []option{
	{flag: "config", env: "REAPER_CONFIG", def: "",
		help: "file of KEY=VALUE lines (the environment variables below), re-read on SIGHUP; the environment wins over it",
		doc:  "`KEY=VALUE` file of these variables ([The config file](#the-config-file)), re-read on SIGHUP; the environment wins over it",
		set: func(c *Config, v string, _ []string) error {
			c.ConfigFile = v
			return nil
		}},
	{flag: "max-age", env: "REAPER_MAX_AGE", def: "2h",
		help: "kill agents this old (Go duration, at most 8760h); env fallback REAPER_MAX_AGENT_AGE_MINUTES (integer minutes)",
		doc: "kill agents this old: a Go duration, at most 8760h; when `REAPER_MAX_AGE` is unset, the seed's " +
			"`REAPER_MAX_AGENT_AGE_MINUTES` (integer minutes) stands in for it",
		// A year at most: beyond that a deadline is nonsense, and near
		// the int64 limit start + max age would wrap into the past.
		set: to(func(c *Config) *time.Duration { return &c.MaxAge }, durations(time.Nanosecond, MaxMaxAge))},
	{flag: "kill-grace", env: "REAPER_KILL_GRACE", def: "5s",
		help: "time between SIGTERM and SIGKILL (0 to 1h)",
		set:  to(func(c *Config) *time.Duration { return &c.KillGrace }, durations(0, time.Hour))},
	{flag: "agent", env: "REAPER_AGENTS", def: "claude,npm*:agent", repeat: true,
		help: "agent rule COMM, COMM* (prefix) or either with :TEXT required in the cmdline; repeatable",
		doc:  "agent rule: `COMM`, `COMM*` (a prefix), either with `:TEXT` required in the command line ([Agent rules](#agent-rules))",
		set: func(c *Config, _ string, many []string) (err error) {
			for _, s := range many {
				if strings.TrimSpace(s) == "" {
					return errors.New("empty agent rule")
				}
			}
			c.Agents, err = tracker.ParseRules(many)
			return
		}},
	{flag: "under", env: "REAPER_UNDER", def: "", repeat: true,
		help: "only agents descending from this PID or process name, or (cgroup:GLOB) whose own cgroup v2 path matches GLOB; repeatable (default: no limit)",
		doc: "only agents descending from this PID or process name, or, as `cgroup:GLOB`, whose own cgroup v2 path " +
			"matches GLOB (`cgroup:/kubepods*`); any match scopes in ([Scope](#scope))",
		set: func(c *Config, _ string, many []string) error {
			c.Under = nil
			for _, s := range many {
				a, err := tracker.ParseAncestor(s)
				if err != nil {
					return err
				}
				c.Under = append(c.Under, a)
			}
			return nil
		}},
	{flag: "host-cgroup-root", env: "REAPER_HOST_CGROUP_ROOT", def: "",
		help: "where the host's /sys/fs/cgroup is mounted, to turn the cgroup paths a daemon in a private cgroup namespace reads into host paths (default: host PID 1's, via /proc/1/root); read at start",
		doc: "where the host's `/sys/fs/cgroup` (or its cgroup v2 hierarchy) is mounted, read only when the daemon runs in a " +
			"private cgroup namespace, to turn the paths it reads into host paths " +
			"([Attribution](design.md#attribution-containers-and-pods)); read at start",
		shown: "host PID 1's /sys/fs/cgroup (via /proc/1/root)", restart: true,
		set: to(func(c *Config) *string { return &c.HostCgroupRoot }, absPath)},
	{flag: "leftovers", env: "REAPER_LEFTOVERS", def: "kill",
		help: "what happens to a session's processes still alive --leftover-grace after its agent exited: kill or keep",
		doc:  "`kill` or `keep` a session's members still alive `--leftover-grace` after its agent exited",
		set: func(c *Config, v string, _ []string) error {
			switch v {
			case "kill", "keep":
				c.Leftovers = v
				return nil
			}
			return fmt.Errorf("invalid value %q (want kill or keep)", v)
		}},
	{flag: "leftover-grace", env: "REAPER_LEFTOVER_GRACE", def: "30s",
		help: "how long a session's leftovers may outlive its agent",
		set:  to(func(c *Config) *time.Duration { return &c.LeftoverGrace }, durations(0, MaxMaxAge))},
	{flag: "keep", env: "REAPER_KEEP", def: "", repeat: true,
		help: "exempt processes matching this rule (agent rule syntax), with their descendants, from every policy but a manual kill: leftover kills, max age, resource limits and memory pressure (they do not count toward their session's limits); repeatable",
		set: func(c *Config, _ string, many []string) (err error) {
			c.Keep = nil
			var rules []string
			for _, s := range many {
				// "1" is the REAPER_KEEP=1 marker of a process's own
				// environment, inherited by a daemon started from a
				// shell that exported it: not a rule for a process
				// named "1".
				if s = strings.TrimSpace(s); s != "" && s != "1" {
					rules = append(rules, s)
				}
			}
			if len(rules) > 0 {
				c.Keep, err = tracker.ParseRules(rules)
			}
			return
		}},
	{flag: "keep-env", env: "REAPER_KEEP_ENV", def: "true",
		help: "honour REAPER_KEEP=1 in a process's own environment: it and its descendants outlive their agent (no leftover kill, spared when the agent's tree is killed at max age) and nothing else (an agent's own max age, the resource limits and memory pressure still apply); false ignores the marker",
		doc: "honour `REAPER_KEEP=1` in a process's own environment: it and its descendants outlive their agent (never " +
			"leftovers, spared by the agent's tree kill at max age) and nothing else — an agent's own max age, the resource " +
			"limits and memory pressure still apply; `false` ignores the marker ([Keeping something](design.md#sessions-and-leftovers))",
		set: to(func(c *Config) *bool { return &c.KeepEnv }, boolean)},
	{flag: "summary-interval", env: "REAPER_SUMMARY_INTERVAL", def: "5m",
		help: "health snapshot period (1s to 24h; one is also taken at start)",
		// Each snapshot reads /proc of every process and writes a row.
		set: to(func(c *Config) *time.Duration { return &c.SummaryInterval }, durations(time.Second, 24*time.Hour))},
	{flag: "database-url", env: "DATABASE_URL", def: "",
		help: "PostgreSQL URL for health and kill rows (default: none, the spool is the store); prefer --database-url-file", restart: true,
		set: func(c *Config, v string, _ []string) error {
			if v != "" {
				if err := checkDSN(v); err != nil {
					return err
				}
			}
			c.DatabaseURL = v
			return nil
		}},
	{flag: "database-url-file", env: "DATABASE_URL_FILE", def: "",
		help:    "file holding the PostgreSQL URL (mode 0600), re-read on SIGHUP: the password stays out of the command line and the environment",
		restart: true,
		set: func(c *Config, v string, _ []string) error {
			if v == "" {
				return nil
			}
			if c.DatabaseURL != "" {
				return errors.New("a database URL is also given (--database-url or DATABASE_URL): give one or the other")
			}
			dsn, err := readSecretFile(v)
			if err != nil {
				return err
			}
			if err := checkDSN(dsn); err != nil {
				return fmt.Errorf("%s: %w", v, err)
			}
			c.DatabaseURL, c.DatabaseURLFile = dsn, v
			return nil
		}},
	{flag: "host-id", env: "REAPER_HOST_ID", def: "",
		help:  "host column of every row (default: the hostname)",
		shown: "the hostname", restart: true,
		set: func(c *Config, v string, _ []string) error {
			if v == "" {
				h, err := os.Hostname()
				if err != nil || h == "" {
					return fmt.Errorf("no hostname to default to (%v): set it", err)
				}
				v = h
			}
			c.HostID = v
			return nil
		}},
	{flag: "db-statement-timeout", env: "REAPER_DB_STATEMENT_TIMEOUT", def: "15s",
		help:    "the database's statement_timeout for the daemon's writes: a stuck database fails a batch after this, which stays in the spool and is retried (at least 1s)",
		restart: true,
		set:     to(func(c *Config) *time.Duration { return &c.DBStatementTimeout }, durations(time.Second, time.Hour))},
	{flag: "retention", env: "REAPER_RETENTION", def: "168h",
		help: "delete this host's rows older than this, hourly (at least 1m)", restart: true,
		set: to(func(c *Config) *time.Duration { return &c.Retention }, durations(time.Minute, 100*MaxMaxAge))},
	{flag: "spool-max-rows", env: "REAPER_SPOOL_MAX_ROWS", def: "10000",
		help: "spool bound; beyond it the oldest snapshots are dropped first, kills last", restart: true,
		set: to(func(c *Config) *int { return &c.SpoolMaxRows }, integers(10, 10_000_000))},
	{flag: "state-dir", env: "REAPER_STATE_DIR", def: "/var/lib/agent-supervisor",
		help: "directory for the spool", restart: true,
		set: func(c *Config, v string, _ []string) error {
			if v == "" {
				return errors.New("empty path")
			}
			c.StateDir = v
			return nil
		}},
	{flag: "listen", env: "REAPER_LISTEN", def: DefaultListen,
		help: "HTTP address for /healthz and /metrics (only: /agents and /events are on --api-socket); empty disables", restart: true,
		set: to(func(c *Config) *string { return &c.Listen }, address)},
	{flag: "metrics-listen", env: "REAPER_METRICS_LISTEN", def: "",
		help: "a second HTTP address serving /metrics and /healthz, as --listen does, e.g. the node's IP for a Prometheus elsewhere; empty disables",
		doc: "a second HTTP address serving `/metrics` and `/healthz`, as `--listen` does, for a Prometheus elsewhere " +
			"([Running on Kubernetes](deployment.md#running-on-kubernetes)); empty disables",
		restart: true,
		set:     to(func(c *Config) *string { return &c.MetricsListen }, address)},
	{flag: "control-socket", env: "REAPER_CONTROL_SOCKET", def: DefaultControlSocket,
		help: "unix socket for extend, keep, unkeep, kill and reload (root, or --control-group members); empty disables", restart: true,
		set: to(func(c *Config) *string { return &c.ControlSocket }, absPath)},
	{flag: "control-group", env: "REAPER_CONTROL_GROUP", def: "",
		help: "group (name or gid) whose members may use the control socket and the API socket besides root (default: root only)", restart: true,
		set: func(c *Config, v string, _ []string) (err error) {
			c.ControlGroup = v
			c.ControlGID, err = lookupGroup(v)
			return
		}},
	{flag: "api-socket", env: "REAPER_API_SOCKET", def: APISocketAuto,
		help: "unix socket serving /agents, /events, /healthz and /metrics to root and --control-group members (status and events read it); " +
			"auto: " + APISocketName + " in --control-socket's directory, none when the control socket is disabled; empty disables",
		restart: true,
		set: func(c *Config, v string, _ []string) error {
			switch {
			case v == APISocketAuto:
				c.APISocket = APISocketBeside(c.ControlSocket)
				return nil
			case v != "" && !filepath.IsAbs(v):
				return fmt.Errorf("%q is not an absolute path", v)
			case v != "" && filepath.Clean(v) == filepath.Clean(c.ControlSocket):
				return fmt.Errorf("%q is the control socket", v)
			}
			c.APISocket = v
			return nil
		}},
	{flag: "source", env: "REAPER_SOURCE", def: "auto",
		help: "event source: auto (netlink, else /proc polling), netlink or proc", restart: true,
		set: func(c *Config, v string, _ []string) error {
			switch v {
			case "auto", "netlink", "proc":
				c.Source = v
				return nil
			}
			return fmt.Errorf("invalid source %q (want auto, netlink or proc)", v)
		}},
	{flag: "poll-interval", env: "REAPER_POLL_INTERVAL", def: "1s",
		help: "how often to scan /proc when polling (10ms to 1h)", restart: true,
		set: to(func(c *Config) *time.Duration { return &c.PollInterval }, durations(10*time.Millisecond, time.Hour))},
	{flag: "dry-run", env: "REAPER_DRY_RUN", def: "false",
		help: "report what would be killed, signal nothing", restart: true,
		set: to(func(c *Config) *bool { return &c.DryRun }, boolean)},
	{flag: "realtime", env: "REAPER_REALTIME", def: "true",
		help: "run the deadline timer thread at SCHED_FIFO priority 1", restart: true,
		set: to(func(c *Config) *bool { return &c.Realtime }, boolean)},
	{flag: "netlink-rcvbuf", env: "REAPER_NETLINK_RCVBUF", def: "8388608",
		help: "proc connector receive buffer to request, bytes (the kernel doubles it)", restart: true,
		set: to(func(c *Config) *int { return &c.NetlinkRcvbuf }, integers(1024, 1<<30))},
	{flag: "on-kill", env: "REAPER_ON_KILL", def: "",
		help: "run this with /bin/sh -c after each finished kill, the kill record as JSON on stdin (see docs/operations.md); re-read on SIGHUP",
		doc: "command run with `/bin/sh -c` after each finished kill, the kill record as JSON on stdin; re-read on SIGHUP " +
			"([Hook after each kill](operations.md#hook-after-each-kill))",
		set: func(c *Config, v string, _ []string) error {
			c.OnKill = strings.TrimSpace(v)
			return nil
		}},
	{flag: "forward-to", env: "REAPER_FORWARD_TO", def: "child",
		help: "under supervisor init: send the forwarded signals to the command alone (child) or to its process group (group)", restart: true,
		set: func(c *Config, v string, _ []string) error {
			switch v = strings.TrimSpace(v); v {
			case "child", "group":
				c.ForwardGroup = v == "group"
				return nil
			}
			return fmt.Errorf("invalid value %q (want child or group)", v)
		}},
	{flag: "session-max-memory", env: "REAPER_SESSION_MAX_MEMORY", def: "0",
		help: "kill a session whose members' memory (anon RSS; kept members not counted) exceeds this size, e.g. 8GiB (KiB/MiB/GiB, KB/MB/GB, or bytes); 0 is off, a size below one byte an error",
		doc: "kill a session whose memory (anon RSS of its members; those kept by `--keep` or a control-socket keep not counted, " +
			"`REAPER_KEEP=1` ones counted) exceeds this size: `8GiB`, `500MB`, bytes (KiB/MiB/GiB/TiB, KB/MB/GB/TB); `0` is off, " +
			"a size below one byte (`0.4`) exits 2; reason `memory` ([Resource guard](design.md#resource-guard))",
		shown: "0 (off)",
		set:   to(func(c *Config) *int64 { return &c.SessionMaxMemory }, parseSize)},
	{flag: "session-max-procs", env: "REAPER_SESSION_MAX_PROCS", def: "0",
		help:  "kill a session with more live processes than this (processes, not threads; zombies and kept members not counted; checked at every fork too); 0 is off",
		shown: "0 (off)",
		set:   to(func(c *Config) *int { return &c.SessionMaxProcs }, integers(0, 1<<22))},
	{flag: "session-idle", env: "REAPER_SESSION_IDLE", def: "0",
		help:  "kill a session none of whose processes used CPU for this long (hung on a prompt, a pager, a dead socket); 0 is off",
		shown: "0 (off)",
		set:   to(func(c *Config) *time.Duration { return &c.SessionIdle }, durations(0, MaxMaxAge))},
	{flag: "resource-interval", env: "REAPER_RESOURCE_INTERVAL", def: "2s",
		help: "how often sessions' memory, processes and CPU are sampled (100ms to 1h)",
		set:  to(func(c *Config) *time.Duration { return &c.ResourceInterval }, durations(100*time.Millisecond, time.Hour))},
	{env: "REAPER_HOOK_TIMEOUT", def: "10s", hidden: true,
		help: "test knob: how long an --on-kill run may take before its process group is killed",
		set:  to(func(c *Config) *time.Duration { return &c.HookTimeout }, durations(10*time.Millisecond, time.Hour))},
	{flag: "pressure", env: "REAPER_PRESSURE", def: "",
		help: `on memory pressure ("some|full STALL WINDOW", e.g. "some 150ms 1s": a PSI trigger) kill the largest session; off by default`,
		doc: "`some|full STALL WINDOW`, e.g. `some 150ms 1s`: on that memory pressure (a PSI trigger) kill the largest session " +
			"([Memory pressure](design.md#memory-pressure))",
		set: func(c *Config, v string, _ []string) error {
			c.Pressure = nil
			if strings.TrimSpace(v) == "" {
				return nil
			}
			sp, err := psi.ParseSpec(v)
			if err != nil {
				return err
			}
			c.Pressure = &sp
			return nil
		}},
	{flag: "pressure-file", env: "REAPER_PRESSURE_FILE", def: "",
		help: "the memory pressure file for --pressure (default: /proc/pressure/memory, or under supervisor init the memory.pressure of the cgroup limiting the daemon and its command)",
		doc: "the memory pressure file for `--pressure`, an absolute path (default: `/proc/pressure/memory`, or under " +
			"`supervisor init` the `memory.pressure` of the limited cgroup it shares with its command; " +
			"[Memory pressure](design.md#memory-pressure))",
		set: to(func(c *Config) *string { return &c.PressureFile }, absPath)},
	{flag: "pressure-min-age", env: "REAPER_PRESSURE_MIN_AGE", def: "1m",
		help: "memory pressure kills only sessions at least this old",
		set:  to(func(c *Config) *time.Duration { return &c.PressureMinAge }, durations(0, MaxMaxAge))},
	{flag: "pressure-cooldown", env: "REAPER_PRESSURE_COOLDOWN", def: "10s",
		help: "after a pressure kill, triggers are only counted for this long (0 to 1h)",
		set:  to(func(c *Config) *time.Duration { return &c.PressureCooldown }, durations(0, time.Hour))},
	{flag: "log-level", env: "REAPER_LOG_LEVEL", def: "info",
		help: "debug, info, warn or error", restart: true,
		set: func(c *Config, v string, _ []string) error {
			switch v {
			case "debug", "info", "warn", "error":
				c.LogLevel = v
				return nil
			}
			return fmt.Errorf("invalid level %q (want debug, info, warn or error)", v)
		}},
	{flag: "event-buffer", env: "REAPER_EVENT_BUFFER", def: "1024",
		help: "events each /events client may have waiting before it is dropped as too slow (1 to 65536)", restart: true,
		// At most 64 clients (events.MaxSubscribers): 64 x 65536
		// buffered events is the most a reader can make us hold.
		set: to(func(c *Config) *int { return &c.EventBuffer }, integers(1, 1<<16))},
	{env: "REAPER_ZOMBIE_WARN_THRESHOLD", def: "500",
		help: "status is warning above this many zombies",
		set:  to(func(c *Config) *int { return &c.ZombieWarnThreshold }, integers(0, 1<<30))},
	{env: "REAPER_FREE_MEM_WARN_MB", def: "1024",
		help: "status is warning below this much free memory",
		set:  to(func(c *Config) *int { return &c.FreeMemWarnMB }, integers(0, 1<<30))},
	{env: "REAPER_SWAP_WARN_PCT", def: "0.7",
		help: "status is warning above this fraction of swap used (0..1)",
		set: func(c *Config, v string, _ []string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				return fmt.Errorf("invalid fraction %q (want a number from 0 to 1)", v)
			}
			c.SwapWarnPct = f
			return nil
		}},
}

// sizeUnits are the suffixes parseSize knows: binary (KiB) and decimal
// (KB) multiples, and bytes.
var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1},
}

// parseSize parses a memory size: a number, optionally with a unit
// (KiB/MiB/GiB/TiB, KB/MB/GB/TB, B; case-insensitive), e.g. 8GiB, 1.5GB,
// 200000000. 0 is off.
func parseSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. 8GiB, 500MB or bytes)", v)
	}
	n := f * mult
	if n >= 1<<62 {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	if f != 0 && n < 1 {
		// "0.4" must not turn a limit off by rounding: only a zero says off.
		return 0, fmt.Errorf("size %q is less than one byte (0 alone turns the limit off)", v)
	}
	return int64(n), nil
}

// MaxMaxAge bounds --max-age (and the seed's minutes variable).
const MaxMaxAge = 365 * 24 * time.Hour

// to is the set of an option that parses its value into one field of
// Config: at says where.
func to[T any](at func(*Config) *T, parse func(string) (T, error)) func(*Config, string, []string) error {
	return func(c *Config, v string, _ []string) (err error) {
		*at(c), err = parse(v)
		return
	}
}

// durations parses a duration from min to max.
func durations(min, max time.Duration) func(string) (time.Duration, error) {
	return func(v string) (time.Duration, error) { return durationIn(v, min, max) }
}

// integers parses an integer from min to max.
func integers(min, max int) func(string) (int, error) {
	return func(v string) (int, error) { return integer(v, min, max) }
}

// absPath is an absolute path, or empty.
func absPath(v string) (string, error) {
	if v != "" && !filepath.IsAbs(v) {
		return "", fmt.Errorf("%q is not an absolute path", v)
	}
	return v, nil
}

// address is a host:port to listen on, or empty.
func address(v string) (string, error) {
	if v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return "", fmt.Errorf("invalid address %q: %v", v, err)
		}
	}
	return v, nil
}

// durationIn parses a Go duration and checks it is within [min, max].
func durationIn(v string, min, max time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 90s, 2h)", v)
	}
	if d < min || d > max {
		if min == time.Nanosecond {
			return 0, fmt.Errorf("duration %s must be positive and at most %s", d, max)
		}
		return 0, fmt.Errorf("duration %s is out of range [%s, %s]", d, min, max)
	}
	return d, nil
}

func integer(v string, min, max int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", v)
	}
	if n < min || n > max {
		return 0, fmt.Errorf("%d is out of range [%d, %d]", n, min, max)
	}
	return n, nil
}

func boolean(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("invalid boolean %q (want true or false)", v)
	}
	return b, nil
}

// usageError is a configuration error: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// ErrHelp is returned when --help was asked for.
var ErrHelp = errors.New("help")

// Parse reads flags from args and the environment through getenv,
// then, for variables the environment does not set, the --config file.
// The flag set has the daemon options and cmd's own flags from the
// commands table; extra, if set, binds the latter to the command's
// variables (BoolVar, DurationVar).
func Parse(cmd string, args []string, getenv func(string) string, stdout io.Writer, extra ...func(*flag.FlagSet)) (*Config, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	single := map[string]*string{}
	repeated := map[string]*multi{}
	for _, o := range options {
		if o.flag == "" {
			continue
		}
		if o.repeat {
			m := &multi{}
			repeated[o.flag] = m
			fs.Var(m, o.flag, o.help)
		} else if o.def == "false" || o.def == "true" {
			// A boolean flag may stand alone: --dry-run.
			s := new(string)
			single[o.flag] = s
			fs.Var(boolFlag{s}, o.flag, o.help)
		} else {
			single[o.flag] = fs.String(o.flag, o.def, o.help)
		}
	}
	if c := lookupCommand(cmd); c != nil && c.daemon {
		defineFlags(fs, cmd) // its own flags: extra gives them variables
	}
	for _, e := range extra {
		e(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			PrintHelp(stdout, cmd)
			return nil, ErrHelp
		}
		return nil, usageError{FlagError(err)}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", ScrubArg(fs.Arg(0)))}
	}
	// The config file: named by --config or REAPER_CONFIG, it stands in for
	// the environment where the environment is silent.
	path := getenv("REAPER_CONFIG")
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	}
	layers := []layer{{getenv, ""}}
	if path != "" {
		file, err := readConfigFile(path)
		if err != nil {
			return nil, usageError{"--config: " + err.Error()}
		}
		layers = append(layers, layer{func(k string) string { return file[k] }, path + ": "})
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	c := &Config{}
	for _, o := range options {
		// name says where a bad value came from; never the value itself,
		// which may be a database URL with its password.
		name, v, many := "", o.def, splitList(o.def)
		if o.flag != "" && given[o.flag] {
			name = "--" + o.flag
			if o.repeat {
				many = *repeated[o.flag]
			} else {
				v = *single[o.flag]
			}
		} else {
			var err error
			if name, v, err = lookup(o.env, layers); err != nil {
				return nil, usageError{err.Error()}
			}
			if name == "" {
				name, v = o.env, o.def
			}
			many = splitList(v)
		}
		if err := o.set(c, v, many); err != nil {
			return nil, usageError{name + ": " + err.Error()}
		}
	}
	return c, nil
}

// layer is one source of variables below the flags: the environment, then
// the --config file (prefix names it in errors).
type layer struct {
	get    func(string) string
	prefix string
}

// lookup finds env in the first layer that sets it and returns its name
// there, or "" if none does. The seed's REAPER_MAX_AGENT_AGE_MINUTES stands
// in for REAPER_MAX_AGE within its layer: the environment wins over the
// file whichever of the two variables each uses.
func lookup(env string, layers []layer) (name, v string, err error) {
	for _, l := range layers {
		if v := l.get(env); v != "" {
			return l.prefix + env, v, nil
		}
		if env != "REAPER_MAX_AGE" {
			continue
		}
		if mv := l.get("REAPER_MAX_AGENT_AGE_MINUTES"); mv != "" {
			name := l.prefix + "REAPER_MAX_AGENT_AGE_MINUTES"
			n, err := integer(mv, 1, int(MaxMaxAge/time.Minute))
			if err != nil {
				return "", "", fmt.Errorf("%s: %w", name, err)
			}
			return name, strconv.Itoa(n) + "m", nil
		}
	}
	return "", "", nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

type boolFlag struct{ s *string }

func (b boolFlag) String() string {
	if b.s == nil {
		return ""
	}
	return *b.s
}
func (b boolFlag) Set(v string) error { *b.s = v; return nil }
func (b boolFlag) IsBoolFlag() bool   { return true }

// readConfigFile reads KEY=VALUE lines; blank lines and # comments are
// skipped, and only known variables are accepted.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{"REAPER_MAX_AGENT_AGE_MINUTES": true}
	for _, o := range options {
		known[o.env] = true
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		// Never quote the line: it may be a database URL with its password.
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE (the line is not shown: it may hold a password)", path, i+1)
		}
		if !known[k] {
			return nil, fmt.Errorf("%s:%d: unknown variable %q", path, i+1, ScrubArg(k))
		}
		out[k] = unquote(strings.TrimSpace(v))
	}
	return out, nil
}

// unquote strips one pair of matching quotes around a config file value:
// a command such as --on-kill's may end in a quote of its own.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// DefaultControlSocket is where the control socket lives unless told.
const DefaultControlSocket = "/run/agent-supervisor/control.sock"

// APISocketName is the API socket's file name beside the control socket,
// and APISocketAuto the --api-socket value that asks for it.
const (
	APISocketName = "api.sock"
	APISocketAuto = "auto"
)

// APISocketBeside is the API socket's path for a control socket: the same
// directory, so that whoever may reach one reaches the other, and a client
// that knows where the control socket is finds it (status, events). None
// when the control socket is disabled.
func APISocketBeside(controlSocket string) string {
	if controlSocket == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(controlSocket), APISocketName)
}

// lookupGroup resolves --control-group: a group name, or a gid. -1 when
// none is given.
func lookupGroup(v string) (int, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1, nil
	}
	if n, err := strconv.ParseUint(v, 10, 31); err == nil {
		return int(n), nil // a gid needs no name in /etc/group
	}
	g, err := user.LookupGroup(v)
	if err != nil {
		return -1, fmt.Errorf("unknown group %q", v)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("group %q has gid %q, not a number", v, g.Gid)
	}
	return gid, nil
}

// NeedRestart names the options a reload does not apply (marked restart in
// the table): the daemon logs each that changed as needing a restart.
func NeedRestart() []string {
	var names []string
	for _, o := range options {
		if o.restart {
			names = append(names, o.flag)
		}
	}
	return names
}
