package main

import (
	"bytes"
	"strings"
	"testing"
)

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
	c, err := parseConfig("run", nil, env("REAPER_UNDER", "1234, codium ,cgroup:/kubepods*"), &bytes.Buffer{})
	if err != nil || len(c.Under) != 3 || c.Under[0].PID != 1234 || c.Under[1].Comm != "codium" || c.Under[2].String() != "cgroup:/kubepods*" {
		t.Errorf("REAPER_UNDER mixed: %+v %v", c.Under, err)
	}
}
