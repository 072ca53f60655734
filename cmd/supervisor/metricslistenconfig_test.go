package main

import (
	"io"
	"strings"
	"testing"
)

func TestMetricsListenConfig(t *testing.T) {
	if _, err := parseConfig("run", []string{"--metrics-listen", "no-port"}, env(), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--metrics-listen") {
		t.Errorf("a bad --metrics-listen: %v, want an error naming the flag", err)
	}
	if _, err := parseConfig("run", nil, env("REAPER_METRICS_LISTEN", "x"), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "REAPER_METRICS_LISTEN") {
		t.Errorf("a bad REAPER_METRICS_LISTEN: %v, want an error naming it", err)
	}
	c, err := parseConfig("run", nil, env("REAPER_METRICS_LISTEN", "10.0.0.7:9848"), io.Discard)
	if err != nil || c.MetricsListen != "10.0.0.7:9848" {
		t.Errorf("REAPER_METRICS_LISTEN=10.0.0.7:9848: %v %+v", err, c)
	}
}
