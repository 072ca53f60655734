package main

import (
	"io"
	"strings"
	"testing"
)

// TestKeepEnvConfig: --keep-env defaults to true; the flag and
// REAPER_KEEP_ENV turn it off; anything but a boolean exits 2 naming it.
func TestKeepEnvConfig(t *testing.T) {
	c, err := parseConfig("run", nil, env(), io.Discard)
	if err != nil || !c.KeepEnv {
		t.Fatalf("default: KeepEnv %v, %v; want true", c != nil && c.KeepEnv, err)
	}
	if c, err = parseConfig("run", nil, env("REAPER_KEEP_ENV", "false"), io.Discard); err != nil || c.KeepEnv {
		t.Errorf("REAPER_KEEP_ENV=false: %+v, %v", c, err)
	}
	if c, err = parseConfig("run", []string{"--keep-env=false"}, env("REAPER_KEEP_ENV", "true"), io.Discard); err != nil || c.KeepEnv {
		t.Errorf("--keep-env=false over the environment: %+v, %v", c, err)
	}
	if _, err = parseConfig("run", nil, env("REAPER_KEEP_ENV", "maybe"), io.Discard); err == nil || !strings.Contains(err.Error(), "REAPER_KEEP_ENV") {
		t.Errorf("REAPER_KEEP_ENV=maybe: %v, want an error naming it", err)
	}
}
