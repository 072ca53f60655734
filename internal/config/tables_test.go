package config

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
)

// TestOptionsTable: every option has a variable and a help; flags and
// variables are unique; every default goes through its own check, as
// Parse gives it, alone and in the table's order.
func TestOptionsTable(t *testing.T) {
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, o := range options {
		if o.env == "" || o.help == "" {
			t.Errorf("option %q/%q: want a variable and a help", o.flag, o.env)
		}
		if flags[o.flag] && o.flag != "" {
			t.Errorf("flag --%s twice", o.flag)
		}
		if envs[o.env] {
			t.Errorf("variable %s twice", o.env)
		}
		flags[o.flag], envs[o.env] = true, true
		if !regexp.MustCompile(`^([a-z][a-z0-9-]*)?$`).MatchString(o.flag) || !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(o.env) {
			t.Errorf("option %q/%q: a flag is lower-case-with-dashes, a variable UPPER_CASE", o.flag, o.env)
		}
		if o.repeat && o.isBool() {
			t.Errorf("--%s: a boolean cannot repeat", o.flag)
		}
		if o.hidden && o.doc != "" {
			t.Errorf("%s: a hidden option has no doc", o.env)
		}
		if err := o.set(&Config{}, o.def, splitList(o.def)); err != nil {
			t.Errorf("%s: the default %q fails its own check: %v", o.env, o.def, err)
		}
	}
	c := &Config{}
	for _, o := range options {
		if err := o.set(c, o.def, splitList(o.def)); err != nil {
			t.Errorf("%s: the default %q fails its own check after the others: %v", o.env, o.def, err)
		}
	}
	if envs["REAPER_MAX_AGENT_AGE_MINUTES"] {
		t.Error("REAPER_MAX_AGENT_AGE_MINUTES is the seed's stand-in for REAPER_MAX_AGE (lookup), not an option")
	}
}

// TestCommandsTable: commands and their flags are unique and helped; a
// daemon command's own flags do not shadow a daemon option; every flag a
// synopsis names is one the command documents, and every default parses.
func TestCommandsTable(t *testing.T) {
	names := map[string]bool{}
	optionFlags := map[string]bool{}
	for _, o := range options {
		optionFlags[o.flag] = true
	}
	synFlag := regexp.MustCompile(`--[a-z][a-z0-9-]*`)
	for _, c := range commands {
		if names[c.name] {
			t.Errorf("command %s twice", c.name)
		}
		names[c.name] = true
		if c.summary == "" || !strings.HasPrefix(c.synopsis, c.name) {
			t.Errorf("%s: want a summary and a synopsis starting with its name (%q)", c.name, c.synopsis)
		}
		own := map[string]bool{}
		for _, f := range c.flags {
			if own[f.name] {
				t.Errorf("%s: --%s twice", c.name, f.name)
			}
			own[f.name] = true
			if f.help == "" {
				t.Errorf("%s --%s: no help", c.name, f.name)
			}
			if c.daemon && optionFlags[f.name] {
				t.Errorf("%s --%s: shadows the daemon option", c.name, f.name)
			}
			if (f.kind == kindBool) != (f.arg == "") {
				t.Errorf("%s --%s: a boolean, and only a boolean, has no ARG", c.name, f.name)
			}
			if f.only != "" && lookupCommand(f.only) == nil {
				t.Errorf("%s --%s: only for %q, no such command", c.name, f.name, f.only)
			}
		}
		documented := map[string]bool{}
		for _, f := range c.documented() {
			documented[f.name] = true
		}
		for _, m := range synFlag.FindAllString(c.synopsis, -1) {
			if name := strings.TrimPrefix(m, "--"); !documented[name] {
				t.Errorf("%s: its synopsis names %s, which it does not document", c.name, m)
			}
		}
		NewFlagSet(c.name) // panics on a default that does not parse
	}
	if CommandNames() != "run, init, once, status, health, events, top, history, fleet, migrate, extend, keep, unkeep, kill, reload, version" {
		t.Errorf("commands: %s", CommandNames())
	}
	if eventTypes != events.All.String() {
		t.Errorf("--types' help lists %s; the event types are %s", eventTypes, events.All)
	}
}

// TestHelpListsFlags: each command's --help has its synopsis, every flag it
// documents with its default, the daemon options when it takes them, and
// nothing hidden; supervisor --help lists every command.
func TestHelpListsFlags(t *testing.T) {
	hiddenOpts := func(t *testing.T, out string) {
		for _, o := range options {
			if o.hidden && strings.Contains(out, o.env) {
				t.Errorf("the help lists the hidden %s", o.env)
			}
		}
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			PrintHelp(&b, c.name)
			out := b.String()
			if !strings.HasPrefix(out, "usage: supervisor "+c.synopsis+"\n") {
				t.Errorf("no usage line:\n%s", out)
			}
			for _, f := range c.flags {
				listed := strings.Contains(out, "  "+f.usageName())
				if want := !f.hidden && (f.only == "" || f.only == c.name); listed != want {
					t.Errorf("--%s listed %v, want %v:\n%s", f.name, listed, want, out)
				}
				if listed && f.def != "" && !strings.Contains(strings.Join(strings.Fields(out), " "), "(default "+f.def+")") {
					t.Errorf("--%s: no default %s:\n%s", f.name, f.def, out)
				}
			}
			for _, o := range options {
				line := fmt.Sprintf("\n%-22s %-30s default ", "  --"+o.flag, o.env)
				if o.flag == "" {
					line = fmt.Sprintf("\n%-22s %-30s default ", "  (env only)", o.env)
				}
				if listed := strings.Contains(out, line); !o.hidden && listed != c.daemon {
					t.Errorf("daemon option %s listed %v, want %v", o.env, listed, c.daemon)
				}
			}
			hiddenOpts(t, out)
		})
	}
	var b bytes.Buffer
	PrintHelp(&b, "")
	for _, c := range commands {
		if !strings.Contains(b.String(), "\n  "+c.synopsis+"\n") {
			t.Errorf("supervisor --help lacks %s", c.synopsis)
		}
	}
	hiddenOpts(t, b.String())
}

// TestCommandFlags: the table's flag sets parse as the flag package's
// own: the same values, defaults and error messages (the commands print
// them), and the accessors hand out the parsed values.
func TestCommandFlags(t *testing.T) {
	fs := NewFlagSet("health")
	timeout, api := Duration(fs, "timeout"), String(fs, "api-socket")
	if *timeout != 3*time.Second || *api != "" {
		t.Errorf("defaults: %s %q", *timeout, *api)
	}
	if err := fs.Parse([]string{"--timeout", "90s", "--api-socket", "/x/api.sock"}); err != nil || *timeout != 90*time.Second || *api != "/x/api.sock" {
		t.Errorf("parsed: %v %s %q", err, *timeout, *api)
	}
	// A flag set made elsewhere gets the flag from the table when asked.
	plain := flag.NewFlagSet("kill", flag.ContinueOnError)
	if force := Bool(plain, "force"); *force || plain.Parse([]string{"--force"}) != nil || !*force {
		t.Errorf("--force on a plain flag set: %v", *force)
	}

	for _, c := range []struct {
		cmd  string
		args []string
		std  func(*flag.FlagSet)
	}{
		{"kill", []string{"--force=maybe"}, func(fs *flag.FlagSet) { fs.Bool("force", false, "") }},
		{"health", []string{"--timeout", "soon"}, func(fs *flag.FlagSet) { fs.Duration("timeout", 0, "") }},
		{"health", []string{"--timeout"}, func(fs *flag.FlagSet) { fs.Duration("timeout", 0, "") }},
		{"status", []string{"--nope"}, func(fs *flag.FlagSet) {}},
	} {
		std := flag.NewFlagSet(c.cmd, flag.ContinueOnError)
		std.SetOutput(io.Discard)
		c.std(std)
		want := std.Parse(c.args)
		got := NewFlagSet(c.cmd).Parse(c.args)
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Errorf("%s %v: error %v, want the flag package's %v", c.cmd, c.args, got, want)
		}
	}

	// ParseFlags: the help on stdout and exit 0; a bad flag on stderr and 2.
	var out, errb bytes.Buffer
	if code, done := ParseFlags(NewFlagSet("events"), []string{"--help"}, &out, &errb); code != 0 || !done ||
		!strings.HasPrefix(out.String(), "usage: supervisor events ") || errb.Len() > 0 {
		t.Errorf("events --help: %d %v %q %q", code, done, out.String(), errb.String())
	}
	out.Reset()
	if code, done := ParseFlags(NewFlagSet("events"), []string{"--nope"}, &out, &errb); code != 2 || !done ||
		errb.String() != "supervisor: unknown flag --nope\n" || out.Len() > 0 {
		t.Errorf("events --nope: %d %v %q %q", code, done, out.String(), errb.String())
	}
	if code, done := ParseFlags(NewFlagSet("events"), []string{"--json"}, &out, &errb); code != 0 || done {
		t.Errorf("events --json: %d %v", code, done)
	}

	// A daemon command's own flags come with Parse; extra binds them.
	var since time.Duration
	var asJSON bool
	bind := func(fs *flag.FlagSet) {
		DurationVar(fs, &since, "since")
		BoolVar(fs, &asJSON, "json")
	}
	if _, err := Parse("history", nil, env(), io.Discard, bind); err != nil || since != 24*time.Hour || asJSON {
		t.Errorf("history defaults: %v %s %v", err, since, asJSON)
	}
	if _, err := Parse("history", []string{"--since", "2h", "--json", "--max-age", "1h"}, env(), io.Discard, bind); err != nil ||
		since != 2*time.Hour || !asJSON {
		t.Errorf("history flags: %v %s %v", err, since, asJSON)
	}
	if _, err := Parse("fleet", []string{"--since", "2h"}, env(), io.Discard); err == nil || !strings.Contains(err.Error(), "unknown flag --since") {
		t.Errorf("fleet --since: %v, want unknown flag", err)
	}
}
