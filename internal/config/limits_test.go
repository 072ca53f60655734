package config

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "0GiB": 0, "0.0": 0, "1.4": 1, "200000000": 200000000, "200MiB": 200 << 20, "8GiB": 8 << 30, "8 gib": 8 << 30,
		"512KiB": 512 << 10, "500MB": 500e6, "1.5GB": 1.5e9, "2KB": 2000, "3B": 3, "1TiB": 1 << 40,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GiB", "8XB", "GiB", "NaN", "1e30GiB", "0.4", "0.5B", "1e-10GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

// The limits parse from flags and the environment; a bad one is a usage
// error (exit 2) naming the flag or variable.
func TestConfigResourceLimits(t *testing.T) {
	c, err := Parse("run", []string{"--session-max-memory", "8GiB", "--session-idle", "45m"},
		env("REAPER_SESSION_MAX_PROCS", "400", "REAPER_RESOURCE_INTERVAL", "5s"), io.Discard)
	if err != nil || c.SessionMaxMemory != 8<<30 || c.SessionMaxProcs != 400 || c.SessionIdle != 45*time.Minute || c.ResourceInterval != 5*time.Second {
		t.Fatalf("%+v %v", c, err)
	}
	c, _ = Parse("run", nil, env(), io.Discard)
	if c.SessionMaxMemory != 0 || c.SessionMaxProcs != 0 || c.SessionIdle != 0 || c.ResourceInterval != 2*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		name string
	}{
		{[]string{"--session-max-memory", "lots"}, nil, "--session-max-memory"},
		{[]string{"--session-max-memory", "0.4"}, nil, "--session-max-memory"},
		{nil, []string{"REAPER_SESSION_MAX_MEMORY", "8XB"}, "REAPER_SESSION_MAX_MEMORY"},
		{[]string{"--session-max-procs", "-3"}, nil, "--session-max-procs"},
		{nil, []string{"REAPER_SESSION_IDLE", "soon"}, "REAPER_SESSION_IDLE"},
		{[]string{"--resource-interval", "1ms"}, nil, "--resource-interval"},
	} {
		_, err := Parse("run", tc.args, env(tc.env...), io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tc.name+": ") {
			t.Errorf("%v %v: %v; want a usage error naming %s", tc.args, tc.env, err, tc.name)
		}
	}
}
