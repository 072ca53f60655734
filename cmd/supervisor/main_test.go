package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// TestConfigErrors: every bad value exits 2 with one line naming it,
// before anything runs.
func TestConfigErrors(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"run", "--max-age", "soon"}, nil, "--max-age"},
		{[]string{"run", "--max-age", "-1h"}, nil, "--max-age"},
		{[]string{"run", "--kill-grace", "x"}, nil, "--kill-grace"},
		{[]string{"run", "--agent", ""}, nil, "--agent"},
		{[]string{"run", "--agent", "a*b"}, nil, "--agent"},
		{[]string{"run", "--under", "-5"}, nil, "--under"},
		{[]string{"run", "--source", "kafka"}, nil, "--source"},
		{[]string{"run", "--poll-interval", "1ns"}, nil, "--poll-interval"},
		{[]string{"run", "--listen", "nonsense"}, nil, "--listen"},
		{[]string{"run", "--dry-run=maybe"}, nil, "--dry-run"},
		{[]string{"run", "--bogus"}, nil, "--bogus"},
		{[]string{"run", "extra"}, nil, "extra"},
		{[]string{"frobnicate"}, nil, "frobnicate"},
		{nil, nil, "no command"},
		{[]string{"run"}, []string{"REAPER_MAX_AGE", "2 hours"}, "REAPER_MAX_AGE"},
		{[]string{"run"}, []string{"REAPER_MAX_AGENT_AGE_MINUTES", "ten"}, "REAPER_MAX_AGENT_AGE_MINUTES"},
		{[]string{"run"}, []string{"REAPER_MAX_AGENT_AGE_MINUTES", "0"}, "REAPER_MAX_AGENT_AGE_MINUTES"},
		{[]string{"run"}, []string{"REAPER_AGENTS", "claude,,npm"}, "REAPER_AGENTS"},
		{[]string{"run"}, []string{"REAPER_ZOMBIE_WARN_THRESHOLD", "-1"}, "REAPER_ZOMBIE_WARN_THRESHOLD"},
		{[]string{"run"}, []string{"REAPER_FREE_MEM_WARN_MB", "lots"}, "REAPER_FREE_MEM_WARN_MB"},
		{[]string{"run"}, []string{"REAPER_SWAP_WARN_PCT", "70"}, "REAPER_SWAP_WARN_PCT"},
		{[]string{"run"}, []string{"REAPER_DRY_RUN", "yes please"}, "REAPER_DRY_RUN"},
		{[]string{"run"}, []string{"REAPER_SUMMARY_INTERVAL", "0s"}, "REAPER_SUMMARY_INTERVAL"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := mainErr(c.args, env(c.env...), &out, &errb)
		msg := errb.String()
		if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 and one line naming %s", c.args, c.env, code, msg, c.want)
		}
	}
}

// safeMain is mainErr for arguments that must fail configuration: should
// one not, the command still cannot touch anything (dry run, scoped to this
// test, and a state dir that is a file, so it fails before any scan).
func safeMain(t *testing.T, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	t.Helper()
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	safe := []string{args[0], "--dry-run", "--under", strconv.Itoa(os.Getpid()), "--state-dir", notDir}
	return mainErr(append(safe, args[1:]...), getenv, stdout, stderr)
}

// TestConfigMaxAgePrecedence: every combination of the two max-age
// variables in the environment and in the --config file. The environment
// wins over the file whichever variable each uses; within one source
// REAPER_MAX_AGE wins over the seed's minutes; a flag wins over all.
func TestConfigMaxAgePrecedence(t *testing.T) {
	type src struct {
		inFile  bool
		key, v  string
		applied time.Duration
	}
	srcs := []src{ // in precedence order
		{false, "REAPER_MAX_AGE", "11m", 11 * time.Minute},
		{false, "REAPER_MAX_AGENT_AGE_MINUTES", "12", 12 * time.Minute},
		{true, "REAPER_MAX_AGE", "13m", 13 * time.Minute},
		{true, "REAPER_MAX_AGENT_AGE_MINUTES", "14", 14 * time.Minute},
	}
	dir := t.TempDir()
	for mask := 0; mask < 1<<len(srcs); mask++ {
		for _, flagged := range []bool{false, true} {
			var envKV []string
			file := "# test\n"
			want, wantName := 2*time.Hour, "default"
			for i, s := range srcs {
				if mask&(1<<i) == 0 {
					continue
				}
				if s.inFile {
					file += s.key + "=" + s.v + "\n"
				} else {
					envKV = append(envKV, s.key, s.v)
				}
				if wantName == "default" {
					want, wantName = s.applied, fmt.Sprintf("%s (file %v)", s.key, s.inFile)
				}
			}
			var args []string
			if flagged {
				args = []string{"--max-age", "10m"}
				want, wantName = 10*time.Minute, "--max-age"
			}
			conf := filepath.Join(dir, fmt.Sprintf("%d.conf", mask))
			if err := os.WriteFile(conf, []byte(file), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", conf)
			c, err := config.Parse("run", args, env(envKV...), io.Discard)
			if err != nil {
				t.Fatalf("env %v, file %q: %v", envKV, file, err)
			}
			if c.MaxAge != want {
				t.Errorf("env %v, file %q, flag %v: max age %s, want %s from %s", envKV, file, flagged, c.MaxAge, want, wantName)
			}
		}
	}
}

// TestConfigBounds: durations that make no sense are configuration errors
// naming the flag; the edges are accepted.
func TestConfigBounds(t *testing.T) {
	for _, c := range []struct {
		flag    string
		ok, bad []string
	}{
		{"--summary-interval", []string{"1s", "24h"}, []string{"999ms", "1ms", "25h"}},
		{"--kill-grace", []string{"0s"}, []string{"-1s", "2h"}},
		{"--max-age", []string{"8760h"}, []string{"0s", "2562047h"}}, // 2562047h: start + max age would wrap
		{"--poll-interval", nil, []string{"5ms", "2h"}},
		{"--retention", []string{"1h"}, []string{"1s", "-24h"}},
	} {
		for _, v := range c.ok {
			if _, err := config.Parse("run", []string{c.flag, v}, env(), io.Discard); err != nil {
				t.Errorf("%s %s: %v, want accepted", c.flag, v, err)
			}
		}
		for _, v := range c.bad {
			var errb bytes.Buffer
			code := safeMain(t, []string{"run", c.flag, v}, env(), io.Discard, &errb)
			if code != 2 || !strings.Contains(errb.String(), c.flag) {
				t.Errorf("%s %s: exit %d, stderr %q; want 2 naming %s", c.flag, v, code, errb.String(), c.flag)
			}
		}
	}
	var errb bytes.Buffer
	if code := safeMain(t, []string{"run"}, env("REAPER_MAX_AGENT_AGE_MINUTES", "99999999"), io.Discard, &errb); code != 2 ||
		!strings.Contains(errb.String(), "REAPER_MAX_AGENT_AGE_MINUTES") {
		t.Errorf("a max age of 190 years in minutes: exit %d, %q", code, errb.String())
	}
}

// testPassword is distinctive: it must never appear in any output.
const testPassword = "Pw-n0t-For-Your-Eyes-7731"

// TestConfigNeverPrintsPassword: a malformed database URL from every
// source, in every command that reads it, exits 2 with one line naming the
// source and the cause, never the password.
func TestConfigNeverPrintsPassword(t *testing.T) {
	pw := testPassword
	bad := map[string]string{
		"bad port":          "postgres://u:" + pw + "@db.example:notaport/x",
		"bad sslmode":       "postgres://u:" + pw + "@db.example/x?sslmode=bogus",
		"slash in password": "postgres://u:" + pw + "/z@db.example/x",
		"at in password":    "postgres://u:" + pw + "@z@db.example:x/x",
		"hash in password":  "postgres://u:12#" + pw + "@db.example/x",
		"bad escape":        "postgres://u:" + pw + "%zz@db.example/x",
		"query password":    "postgres://u@db.example/x?password=" + pw + "&connect_timeout=soon",
		"keyword/value":     "host=db.example password=" + pw + " port=notaport",
		"unterminated":      "host=db.example password='" + pw + " port=5432",
		"quoted kv":         "host=db.example password='" + pw + "' sslmode=bogus",
	}
	dir := t.TempDir()
	i := 0
	for what, dsn := range bad {
		i++
		urlFile := filepath.Join(dir, fmt.Sprintf("url%d", i))
		os.WriteFile(urlFile, []byte(dsn+"\n"), 0o600)
		conf := filepath.Join(dir, fmt.Sprintf("conf%d", i))
		os.WriteFile(conf, []byte("DATABASE_URL="+dsn+"\n"), 0o600)
		confFile := filepath.Join(dir, fmt.Sprintf("conffile%d", i))
		os.WriteFile(confFile, []byte("DATABASE_URL_FILE="+urlFile+"\n"), 0o600)
		for _, src := range []struct {
			args  []string
			env   []string
			names string
		}{
			{[]string{"--database-url", dsn}, nil, "--database-url"},
			{nil, []string{"DATABASE_URL", dsn}, "DATABASE_URL"},
			{[]string{"--config", conf}, nil, conf + ": DATABASE_URL"},
			{nil, []string{"REAPER_CONFIG", conf}, conf + ": DATABASE_URL"},
			{[]string{"--database-url-file", urlFile}, nil, "--database-url-file"},
			{nil, []string{"DATABASE_URL_FILE", urlFile}, "DATABASE_URL_FILE"},
			{[]string{"--config", confFile}, nil, confFile + ": DATABASE_URL_FILE"},
		} {
			for _, cmd := range []string{"run", "once", "history"} {
				var out, errb bytes.Buffer
				code := safeMain(t, append([]string{cmd}, src.args...), env(src.env...), &out, &errb)
				msg := errb.String()
				if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, src.names) || !strings.Contains(msg, "PostgreSQL URL") {
					t.Errorf("%s via %s (%s): exit %d, %q; want 2 and one line naming %s", what, src.names, cmd, code, msg, src.names)
				}
				if strings.Contains(msg+out.String(), pw) {
					t.Errorf("%s via %s (%s): the password was printed: %q", what, src.names, cmd, msg)
				}
			}
		}
	}
	// Where the password can be located, the URL is shown config.Masked.
	var errb bytes.Buffer
	safeMain(t, []string{"run", "--database-url", bad["bad sslmode"]}, env(), io.Discard, &errb)
	if !strings.Contains(errb.String(), "postgres://u:xxxxx@db.example/x?sslmode=bogus") {
		t.Errorf("config.Masked URL not shown: %q", errb.String())
	}

	// Lines of a config file are never quoted: a mistyped key or a bare URL.
	for _, line := range []string{"DATABSE_URL=postgres://u:" + pw + "@h/x", "postgres://u:" + pw + "@h/x"} {
		conf := filepath.Join(dir, "typo.conf")
		os.WriteFile(conf, []byte(line+"\n"), 0o600)
		errb.Reset()
		if code := safeMain(t, []string{"run", "--config", conf}, env(), io.Discard, &errb); code != 2 ||
			strings.Contains(errb.String(), pw) || !strings.Contains(errb.String(), conf+":1") {
			t.Errorf("config line %q: exit %d, %q", line, code, errb.String())
		}
	}
	// Nor a stray argument that looks like a URL.
	errb.Reset()
	if code := safeMain(t, []string{"run", "--database-url", "postgres://u:" + pw + "@h/x", "oops"}, env(), io.Discard, &errb); code != 2 {
		t.Errorf("stray argument: exit %d", code)
	}
	errb.Reset()
	if code := safeMain(t, []string{"run", "--dry-run", "postgres://u:" + pw + "@h/x"}, env(), io.Discard, &errb); code != 2 ||
		strings.Contains(errb.String(), pw) {
		t.Errorf("stray URL argument: exit %d, %q", code, errb.String())
	}
}

// A bad glob exits 2 naming it; REAPER_UNDER mixes PIDs, names and globs.
func TestConfigUnderCgroup(t *testing.T) {
	for _, c := range []struct{ args, env []string }{
		{[]string{"run", "--under", "cgroup:kubepods*"}, nil},
		{[]string{"run"}, []string{"REAPER_UNDER", "1234,cgroup:"}},
	} {
		var out, errb bytes.Buffer
		code := mainErr(c.args, env(c.env...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "cgroup:") || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v %v: exit %d, %q; want 2 and one line naming the glob", c.args, c.env, code, errb.String())
		}
	}
	c, err := config.Parse("run", nil, env("REAPER_UNDER", "1234, codium ,cgroup:/kubepods*"), &bytes.Buffer{})
	if err != nil || len(c.Under) != 3 || c.Under[0].PID != 1234 || c.Under[1].Comm != "codium" || c.Under[2].String() != "cgroup:/kubepods*" {
		t.Errorf("REAPER_UNDER mixed: %+v %v", c.Under, err)
	}
}

// env is the environment a test gives the code it runs.
var env = testutil.Env

// Usage errors exit 2 before any connection; a missing daemon exits 1.
func TestControlCmdUsage(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"REAPER_CONTROL_SOCKET": "/nonexistent/dir/control.sock"}[k]
	}
	for _, args := range [][]string{
		{"extend", "12"}, {"extend", "12", "1h", "2h"}, {"extend", "0", "1h"}, {"extend", "x", "1h"}, {"extend", "12", "never"},
		{"extend", "12", "--until", "later"}, {"keep"}, {"keep", "1", "2"}, {"unkeep", "-3"}, {"kill", "12", "--until", "10:00"},
		{"keep", "12", "--force"}, {"reload", "now"}, {"reload", "--bogus"}, {"reload", "--control-socket", ""},
	} {
		var out, errb bytes.Buffer
		if code := mainErr(args, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: supervisor") {
			t.Errorf("%v: exit %d %q, want 2 with the usage", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := mainErr([]string{"kill", "12", "--force"}, env, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "no daemon answers on /nonexistent/dir/control.sock") {
		t.Errorf("kill without a daemon (socket from the environment): exit %d %q", code, errb.String())
	}
	out.Reset()
	if code := mainErr([]string{"extend", "--help"}, env, &out, &errb); code != 0 || !strings.Contains(out.String(), "--until") {
		t.Errorf("extend --help: exit %d %q", code, out.String())
	}
}

// TestFleetNoDatabase: without a database the command says where to give
// one and exits 2, as for any missing setting; a bad flag exits 2 too.
func TestFleetNoDatabase(t *testing.T) {
	env := func(string) string { return "" }
	var out, errb bytes.Buffer
	if code := mainErr([]string{"fleet"}, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no database given") {
		t.Errorf("exit %d %q", code, errb.String())
	}
	errb.Reset()
	if code := mainErr([]string{"fleet", "--jsn"}, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown flag --jsn") {
		t.Errorf("exit %d %q", code, errb.String())
	}
}

// Usage errors exit 2 with one line naming the cause, before anything
// starts. (Should a case pass, safeMain's arguments keep the daemon from
// doing anything; the command is `true`.)
func TestInitUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"init"}, nil, "no command"},
		{[]string{"init", "--max-age", "1h"}, nil, "no command"},
		{[]string{"init", "--"}, nil, "no command after --"},
		{[]string{"init", "--", ""}, nil, "no command after --"},
		{[]string{"init", "--forward-to", "pgrp", "--", "true"}, nil, "--forward-to"},
		{[]string{"init", "--", "true"}, []string{"REAPER_FORWARD_TO", "everyone"}, "REAPER_FORWARD_TO"},
		{[]string{"init", "--bogus", "--", "true"}, nil, "--bogus"},
		{[]string{"init", "--max-age", "soon", "--", "true"}, nil, "--max-age"},
	} {
		var errb bytes.Buffer
		var code int
		if len(c.args) > 1 {
			code = safeMain(t, c.args, env(c.env...), io.Discard, &errb)
		} else {
			code = mainErr(c.args, env(c.env...), io.Discard, &errb)
		}
		msg := errb.String()
		if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%q %q: exit %d, stderr %q; want 2 and one line naming %s", c.args, c.env, code, msg, c.want)
		}
	}
}

func TestInitHelp(t *testing.T) {
	var out bytes.Buffer
	if code := mainErr([]string{"init", "--help"}, env(), &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out.String(), "--forward-to") || !strings.Contains(out.String(), "REAPER_FORWARD_TO") {
		t.Errorf("init --help lacks --forward-to:\n%s", out.String())
	}
	out.Reset()
	mainErr([]string{"--help"}, env(), &out, io.Discard)
	if !strings.Contains(out.String(), "init [flags] -- CMD") {
		t.Error("--help does not list init")
	}
}
