package daemon

import (
	"io"
	"slices"
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
		if err != nil || forwardTo(cfg) != c.want {
			t.Errorf("%q %q: %v %v, want %v", c.args, c.env, forwardTo(cfg), err, c.want)
		}
	}
}

// env is a getenv over the given KEY, VALUE pairs.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}
