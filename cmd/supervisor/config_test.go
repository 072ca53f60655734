package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestConfigPrecedence(t *testing.T) {
	c, err := parseConfig("run", nil, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxAge != 2*time.Hour || c.KillGrace != 5*time.Second || c.Source != "auto" || c.PollInterval != time.Second ||
		c.Listen != defaultListen || c.DryRun || len(c.Agents) != 2 || c.Agents[1].String() != "npm*:agent" ||
		c.ZombieWarnThreshold != 500 || c.FreeMemWarnMB != 1024 || c.SwapWarnPct != 0.7 || c.StateDir != "/var/lib/agent-supervisor" {
		t.Errorf("defaults: %+v", c)
	}
	// The seed's variable in minutes, when REAPER_MAX_AGE is unset.
	c, _ = parseConfig("run", nil, env("REAPER_MAX_AGENT_AGE_MINUTES", "90"), io.Discard)
	if c.MaxAge != 90*time.Minute {
		t.Errorf("REAPER_MAX_AGENT_AGE_MINUTES=90 gave %s", c.MaxAge)
	}
	c, _ = parseConfig("run", nil, env("REAPER_MAX_AGENT_AGE_MINUTES", "90", "REAPER_MAX_AGE", "45m"), io.Discard)
	if c.MaxAge != 45*time.Minute {
		t.Errorf("REAPER_MAX_AGE should win over the minutes variable: %s", c.MaxAge)
	}
	c, _ = parseConfig("run", []string{"--max-age", "10m", "--agent", "x*", "--agent", "y:z", "--dry-run", "--under", "codium"},
		env("REAPER_MAX_AGE", "45m", "REAPER_AGENTS", "a,b", "REAPER_DRY_RUN", "false", "REAPER_LISTEN", ""), io.Discard)
	if c.MaxAge != 10*time.Minute || len(c.Agents) != 2 || c.Agents[0].String() != "x*" || !c.DryRun ||
		len(c.Under) != 1 || c.Under[0].Comm != "codium" {
		t.Errorf("flags should win: %+v", c)
	}
	c, _ = parseConfig("run", []string{"--listen", ""}, env("REAPER_AGENTS", "claude, npm*:agent", "REAPER_UNDER", "1234"), io.Discard)
	if c.Listen != "" || len(c.Agents) != 2 || len(c.Under) != 1 || c.Under[0].PID != 1234 {
		t.Errorf("env lists: %+v", c)
	}
}

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

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := mainErr([]string{"run", "--help"}, env(), &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, o := range options {
		if o.flag != "" && !strings.Contains(out.String(), "--"+o.flag) {
			t.Errorf("--help lacks --%s", o.flag)
		}
		if !strings.Contains(out.String(), o.env) {
			t.Errorf("--help lacks %s", o.env)
		}
	}
}
