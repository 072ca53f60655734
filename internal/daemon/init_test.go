package daemon

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/initd"
)

func TestSplitInit(t *testing.T) {
	flags, argv, ok := splitInit([]string{"--max-age", "1h", "--", "sh", "-c", "echo -- x", "--"})
	if !ok || !slices.Equal(flags, []string{"--max-age", "1h"}) || !slices.Equal(argv, []string{"sh", "-c", "echo -- x", "--"}) {
		t.Errorf("split: %q %q %v", flags, argv, ok)
	}
	if _, _, ok := splitInit([]string{"--max-age", "1h"}); ok {
		t.Error("no -- reported as given")
	}
	if flags, argv, ok := splitInit([]string{"--"}); !ok || len(flags) != 0 || len(argv) != 0 {
		t.Errorf("bare --: %q %q %v", flags, argv, ok)
	}
}

func TestInitForwardTo(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want initd.Forward
	}{
		{nil, nil, initd.ForwardChild},
		{[]string{"--forward-to", "group"}, nil, initd.ForwardGroup},
		{nil, []string{"REAPER_FORWARD_TO", "group"}, initd.ForwardGroup},
		{[]string{"--forward-to", "child"}, []string{"REAPER_FORWARD_TO", "group"}, initd.ForwardChild},
	} {
		cfg, err := config.Parse("init", c.args, env(c.env...), io.Discard)
		if err != nil || cfg.ForwardTo != c.want {
			t.Errorf("%q %q: %v %v, want %v", c.args, c.env, cfg.ForwardTo, err, c.want)
		}
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
