package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestConfigPressure(t *testing.T) {
	c, err := Parse("run", nil, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pressure != nil || c.PressureMinAge != time.Minute || c.PressureCooldown != 10*time.Second {
		t.Fatalf("defaults: pressure %v, min age %v, cooldown %v; want off, 1m, 10s", c.Pressure, c.PressureMinAge, c.PressureCooldown)
	}
	c, err = Parse("run", []string{"--pressure", "full 50ms 2s"},
		env("REAPER_PRESSURE", "some 150ms 1s", "REAPER_PRESSURE_MIN_AGE", "30s", "REAPER_PRESSURE_COOLDOWN", "0s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pressure == nil || c.Pressure.String() != "full 50ms 2s" || c.PressureMinAge != 30*time.Second || c.PressureCooldown != 0 {
		t.Fatalf("flag over env: %v %v %v", c.Pressure, c.PressureMinAge, c.PressureCooldown)
	}
	if c.PressureFile != "" {
		t.Fatalf("default pressure file %q; want none (psi.Locate chooses)", c.PressureFile)
	}
	c, err = Parse("run", []string{"--pressure-file", "/sys/fs/cgroup/agents.slice/memory.pressure"},
		env("REAPER_PRESSURE_FILE", "/proc/pressure/memory"), io.Discard)
	if err != nil || c.PressureFile != "/sys/fs/cgroup/agents.slice/memory.pressure" {
		t.Fatalf("--pressure-file over env: %q, %v", c.PressureFile, err)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--pressure", "some 150ms"}, nil, `--pressure: pressure trigger "some 150ms": want "some|full STALL WINDOW"`},
		{nil, []string{"REAPER_PRESSURE", "some 150ms 20s"}, "REAPER_PRESSURE: pressure trigger \"some 150ms 20s\": window 20s: must be from 500ms to 10s"},
		{[]string{"--pressure", "some 2s 1s"}, nil, "stall 2s: must be positive and at most the window"},
		{[]string{"--pressure", "any 1s 1s"}, nil, `kind "any"`},
		{[]string{"--pressure-min-age", "-1s"}, nil, "--pressure-min-age: duration -1s is out of range"},
		{nil, []string{"REAPER_PRESSURE_COOLDOWN", "2h"}, "REAPER_PRESSURE_COOLDOWN: duration 2h0m0s is out of range"},
		{[]string{"--pressure-file", "proc/pressure/memory"}, nil, `--pressure-file: "proc/pressure/memory" is not an absolute path`},
	} {
		_, err := Parse("run", tc.args, env(tc.env...), io.Discard)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v; want a usage error (exit 2) containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}
