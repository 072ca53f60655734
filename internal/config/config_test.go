package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// env is the environment a test gives the code it runs.
var env = testutil.Env

func TestConfigPrecedence(t *testing.T) {
	c, err := Parse("run", nil, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxAge != 2*time.Hour || c.KillGrace != 5*time.Second || c.Source != "auto" || c.PollInterval != time.Second ||
		c.Listen != DefaultListen || c.DryRun || len(c.Agents) != 2 || c.Agents[1].String() != "npm*:agent" ||
		c.ZombieWarnThreshold != 500 || c.FreeMemWarnMB != 1024 || c.SwapWarnPct != 0.7 || c.StateDir != "/var/lib/agent-supervisor" {
		t.Errorf("defaults: %+v", c)
	}
	// The seed's variable in minutes, when REAPER_MAX_AGE is unset.
	c, _ = Parse("run", nil, env("REAPER_MAX_AGENT_AGE_MINUTES", "90"), io.Discard)
	if c.MaxAge != 90*time.Minute {
		t.Errorf("REAPER_MAX_AGENT_AGE_MINUTES=90 gave %s", c.MaxAge)
	}
	c, _ = Parse("run", nil, env("REAPER_MAX_AGENT_AGE_MINUTES", "90", "REAPER_MAX_AGE", "45m"), io.Discard)
	if c.MaxAge != 45*time.Minute {
		t.Errorf("REAPER_MAX_AGE should win over the minutes variable: %s", c.MaxAge)
	}
	c, _ = Parse("run", []string{"--max-age", "10m", "--agent", "x*", "--agent", "y:z", "--dry-run", "--under", "codium"},
		env("REAPER_MAX_AGE", "45m", "REAPER_AGENTS", "a,b", "REAPER_DRY_RUN", "false", "REAPER_LISTEN", ""), io.Discard)
	if c.MaxAge != 10*time.Minute || len(c.Agents) != 2 || c.Agents[0].String() != "x*" || !c.DryRun ||
		len(c.Under) != 1 || c.Under[0].Comm != "codium" {
		t.Errorf("flags should win: %+v", c)
	}
	c, _ = Parse("run", []string{"--listen", ""}, env("REAPER_AGENTS", "claude, npm*:agent", "REAPER_UNDER", "1234"), io.Discard)
	if c.Listen != "" || len(c.Agents) != 2 || len(c.Under) != 1 || c.Under[0].PID != 1234 {
		t.Errorf("env lists: %+v", c)
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if _, err := Parse("run", []string{"--help"}, env(), &out); err != ErrHelp {
		t.Fatalf("--help: %v, want ErrHelp", err)
	}
	for _, o := range options {
		if o.hidden { // test knobs
			if strings.Contains(out.String(), o.env) {
				t.Errorf("--help lists the hidden %s", o.env)
			}
			continue
		}
		if o.flag != "" && !strings.Contains(out.String(), "--"+o.flag) {
			t.Errorf("--help lacks --%s", o.flag)
		}
		if !strings.Contains(out.String(), o.env) {
			t.Errorf("--help lacks %s", o.env)
		}
	}
}

// TestConfigDatabaseURLFile: the URL is read from a file, trimmed; a
// missing or empty file, or a file and a URL both, are configuration errors
// naming the file or both sources.
func TestConfigDatabaseURLFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "database-url")
	dsn := "postgres://u:" + testPassword + "@db.example/x"
	os.WriteFile(f, []byte("\n  "+dsn+"  \n"), 0o600)
	c, err := Parse("run", []string{"--database-url-file", f}, env(), io.Discard)
	if err != nil || c.DatabaseURL != dsn || c.DatabaseURLFile != f {
		t.Fatalf("read from the file: %v %+v", err, c)
	}
	c, err = Parse("run", nil, env("DATABASE_URL_FILE", f), io.Discard)
	if err != nil || c.DatabaseURL != dsn {
		t.Fatalf("DATABASE_URL_FILE: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	for _, c := range []struct {
		args, env []string
		want      []string
	}{
		{[]string{"--database-url-file", filepath.Join(dir, "missing")}, nil, []string{"--database-url-file", "missing", "no such file"}},
		{[]string{"--database-url-file", empty}, nil, []string{"--database-url-file", empty, "empty"}},
		{nil, []string{"DATABASE_URL_FILE", empty}, []string{"DATABASE_URL_FILE", empty}},
		{[]string{"--database-url-file", f, "--database-url", dsn}, nil, []string{"--database-url-file", "--database-url"}},
		{[]string{"--database-url-file", f}, []string{"DATABASE_URL", dsn}, []string{"--database-url-file", "DATABASE_URL"}},
	} {
		_, err := Parse("run", c.args, env(c.env...), io.Discard)
		msg := fmt.Sprint(err)
		for _, w := range c.want {
			if err == nil || !strings.Contains(msg, w) {
				t.Errorf("%v %v: %q; want an error naming %s", c.args, c.env, msg, w)
			}
		}
		if strings.Contains(msg, testPassword) {
			t.Errorf("%v: password in the error: %q", c.args, msg)
		}
	}
}

// TestKeepEnvConfig: --keep-env defaults to true; the flag and
// REAPER_KEEP_ENV turn it off; anything but a boolean exits 2 naming it.
func TestKeepEnvConfig(t *testing.T) {
	c, err := Parse("run", nil, env(), io.Discard)
	if err != nil || !c.KeepEnv {
		t.Fatalf("default: KeepEnv %v, %v; want true", c != nil && c.KeepEnv, err)
	}
	if c, err = Parse("run", nil, env("REAPER_KEEP_ENV", "false"), io.Discard); err != nil || c.KeepEnv {
		t.Errorf("REAPER_KEEP_ENV=false: %+v, %v", c, err)
	}
	if c, err = Parse("run", []string{"--keep-env=false"}, env("REAPER_KEEP_ENV", "true"), io.Discard); err != nil || c.KeepEnv {
		t.Errorf("--keep-env=false over the environment: %+v, %v", c, err)
	}
	if _, err = Parse("run", nil, env("REAPER_KEEP_ENV", "maybe"), io.Discard); err == nil || !strings.Contains(err.Error(), "REAPER_KEEP_ENV") {
		t.Errorf("REAPER_KEEP_ENV=maybe: %v, want an error naming it", err)
	}
}

func TestMetricsListenConfig(t *testing.T) {
	if _, err := Parse("run", []string{"--metrics-listen", "no-port"}, env(), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--metrics-listen") {
		t.Errorf("a bad --metrics-listen: %v, want an error naming the flag", err)
	}
	if _, err := Parse("run", nil, env("REAPER_METRICS_LISTEN", "x"), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "REAPER_METRICS_LISTEN") {
		t.Errorf("a bad REAPER_METRICS_LISTEN: %v, want an error naming it", err)
	}
	c, err := Parse("run", nil, env("REAPER_METRICS_LISTEN", "10.0.0.7:9848"), io.Discard)
	if err != nil || c.MetricsListen != "10.0.0.7:9848" {
		t.Errorf("REAPER_METRICS_LISTEN=10.0.0.7:9848: %v %+v", err, c)
	}
}

func TestAPISocketConfig(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
		err  string
	}{
		{want: "/run/agent-supervisor/api.sock"},
		{args: []string{"--control-socket", "/srv/sv/control.sock"}, want: "/srv/sv/api.sock"},
		{env: []string{"REAPER_CONTROL_SOCKET", "/srv/sv/control.sock"}, want: "/srv/sv/api.sock"},
		{args: []string{"--control-socket", ""}, want: ""},
		{args: []string{"--control-socket", "", "--api-socket", "/srv/api.sock"}, want: "/srv/api.sock"},
		{env: []string{"REAPER_API_SOCKET", "/srv/api.sock"}, want: "/srv/api.sock"},
		{args: []string{"--api-socket", ""}, want: ""},
		{args: []string{"--api-socket", "api.sock"}, err: "--api-socket"},
		{args: []string{"--api-socket", "/run/agent-supervisor/control.sock"}, err: "is the control socket"},
	} {
		cfg, err := Parse("run", c.args, env(c.env...), io.Discard)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v %v: error %v, want %q", c.args, c.env, err, c.err)
			}
		case err != nil:
			t.Errorf("%v %v: %v", c.args, c.env, err)
		case cfg.APISocket != c.want:
			t.Errorf("%v %v: api socket %q, want %q", c.args, c.env, cfg.APISocket, c.want)
		}
	}
}

// testPassword is distinctive: it must never appear in any output.
const testPassword = "Pw-n0t-For-Your-Eyes-7731"

// TestMaxExtend: one extend is bounded as --max-age is (the control
// protocol keeps its own copy of the bound).
func TestMaxExtend(t *testing.T) {
	if control.MaxExtend != MaxMaxAge {
		t.Errorf("control.MaxExtend %s, config.MaxMaxAge %s: want the same bound", control.MaxExtend, MaxMaxAge)
	}
}
