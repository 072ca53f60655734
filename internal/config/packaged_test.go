package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestConfFile: the packaged config file names every setting but --config
// once, commented out, and with every line uncommented it is a config file
// the daemon reads to exactly its defaults.
func TestConfFile(t *testing.T) {
	conf := string(ConfFile())
	var active []string
	for _, l := range strings.Split(conf, "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, "=") && !strings.HasPrefix(l, "# ") {
			active = append(active, strings.TrimPrefix(l, "#"))
		} else if l != "" && !strings.HasPrefix(l, "# ") && l != "#" {
			t.Errorf("line %q is neither a comment nor a commented setting", l)
		}
	}
	for _, o := range options {
		n := 0
		for _, a := range active {
			if strings.HasPrefix(a, o.env+"=") {
				n++
			}
		}
		want := 1
		if o.hidden || o.flag == "config" {
			want = 0
		}
		if n != want {
			t.Errorf("%s: %d lines, want %d", o.env, n, want)
		}
	}
	path := filepath.Join(t.TempDir(), "supervisor.conf")
	if err := os.WriteFile(path, []byte(strings.Join(active, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	def, err := Parse("run", nil, none, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("run", []string{"--config", path}, none, os.Stdout)
	if err != nil {
		t.Fatalf("the config file with every setting uncommented: %v", err)
	}
	got.ConfigFile = ""
	if !reflect.DeepEqual(got, def) {
		t.Errorf("the uncommented config file is not the defaults:\n got %+v\nwant %+v", got, def)
	}
}

// TestCompletionsName: each completion names every command and every flag
// each command takes.
func TestCompletionsName(t *testing.T) {
	for name, text := range map[string]string{"bash": string(BashCompletion()), "zsh": string(ZshCompletion()), "fish": string(FishCompletion())} {
		for _, c := range commands {
			if !strings.Contains(text, c.name) {
				t.Errorf("%s: no command %s", name, c.name)
			}
			for _, f := range completionFlags(c) {
				if !strings.Contains(text, f.name) {
					t.Errorf("%s: %s lacks --%s", name, c.name, f.name)
				}
			}
		}
	}
}

// needShell finds a shell the completions are tested in: in CI it must be
// there (scripts/test installs it).
func needShell(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide %s (scripts/test installs it): %v", name, err)
		}
		t.Skipf("skipped: needs %s to run its completion; apt-get install %s (scripts/test does)", name, name)
	}
	return p
}

// completionFile writes a completion to a file for a shell to load.
func completionFile(t *testing.T, text []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "completion")
	if err := os.WriteFile(p, text, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBashCompletion runs the bash completion as bash would on a tab.
func TestBashCompletion(t *testing.T) {
	bash := needShell(t, "bash")
	file := completionFile(t, BashCompletion())
	complete := func(words ...string) []string {
		script := `. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _supervisor; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command(bash, append([]string{"-c", script, "bash", file}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("supervisor", ""); len(got) != len(commands)+2 || !slices.Contains(got, "run") || !slices.Contains(got, "version") {
		t.Errorf("supervisor <tab>: %v, want the %d commands, --help and --version", got, len(commands))
	}
	if got := complete("supervisor", "he"); !slices.Equal(got, []string{"health"}) {
		t.Errorf("supervisor he<tab>: %v", got)
	}
	if got := complete("supervisor", "run", "--max"); !slices.Equal(got, []string{"--max-age"}) {
		t.Errorf("supervisor run --max<tab>: %v", got)
	}
	if got := complete("supervisor", "history", "--si"); !slices.Equal(got, []string{"--since"}) {
		t.Errorf("supervisor history --si<tab>: %v", got)
	}
	if got := complete("supervisor", "status", "--"); !slices.Equal(got, []string{"--api-socket", "--control-socket", "--help"}) {
		t.Errorf("supervisor status --<tab>: %v (no daemon options, no hidden flag)", got)
	}
	if got := complete("supervisor", "kill", "--f"); !slices.Equal(got, []string{"--force"}) {
		t.Errorf("supervisor kill --f<tab>: %v", got)
	}
	if got := complete("supervisor", "extend", "--f"); len(got) != 0 {
		t.Errorf("supervisor extend --f<tab>: %v, want nothing (--force is kill's)", got)
	}
}

// TestFishCompletion asks fish what it completes.
func TestFishCompletion(t *testing.T) {
	fish := needShell(t, "fish")
	file := completionFile(t, FishCompletion())
	complete := func(line string) []string {
		out, err := exec.Command(fish, "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", file, line).CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			names = append(names, strings.Split(l, "\t")[0])
		}
		return names
	}
	if got := complete("supervisor he"); !slices.Equal(got, []string{"health"}) {
		t.Errorf("supervisor he<tab>: %v", got)
	}
	if got := complete("supervisor run --max"); !slices.Equal(got, []string{"--max-age"}) {
		t.Errorf("supervisor run --max<tab>: %v", got)
	}
	if got := complete("supervisor status --"); !slices.Equal(got, []string{"--api-socket", "--control-socket", "--help"}) {
		t.Errorf("supervisor status --<tab>: %v", got)
	}
}

// TestZshCompletion: zsh parses the file, and the function offers what
// bash's does, run with the completion system's words, CURRENT and PREFIX
// and its _describe and _files standing in (printing what they are given).
func TestZshCompletion(t *testing.T) {
	zsh := needShell(t, "zsh")
	file := completionFile(t, ZshCompletion())
	if out, err := exec.Command(zsh, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	complete := func(prefix string, words ...string) []string {
		script := `_describe() { print -l -- ${(P)${@[-1]}} }; _files() { print FILES }
file=$1; PREFIX=$2; shift 2; words=("$@"); CURRENT=$#words; source $file`
		out, err := exec.Command(zsh, append([]string{"-fc", script, "zsh", file, prefix}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v\n%s", err, out)
		}
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, _, _ := strings.Cut(l, ":")
			if strings.HasPrefix(name, prefix) {
				names = append(names, name)
			}
		}
		return names
	}
	if got := complete("", "supervisor", ""); len(got) != len(commands) || got[0] != "run" {
		t.Errorf("supervisor <tab>: %v, want the %d commands", got, len(commands))
	}
	if got := complete("--max", "supervisor", "run", "--max"); !slices.Equal(got, []string{"--max-age"}) {
		t.Errorf("supervisor run --max<tab>: %v", got)
	}
	if got := complete("--", "supervisor", "status", "--"); !slices.Equal(got, []string{"--api-socket", "--control-socket", "--help"}) {
		t.Errorf("supervisor status --<tab>: %v", got)
	}
	if got := complete("", "supervisor", "run", ""); !slices.Equal(got, []string{"FILES"}) {
		t.Errorf("supervisor run <tab>: %v, want files", got)
	}
}
