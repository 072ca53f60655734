package config

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsGenerated: the committed docs/configuration.md and
// docs/supervisor.8 are what the tables make.
func TestDocsGenerated(t *testing.T) {
	files, err := Generated()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		got, err := os.ReadFile(filepath.Join("..", "..", path))
		if err != nil {
			t.Errorf("%s: %v (run `go generate ./internal/config`)", path, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the option and command tables make (first at line %d): run `go generate ./internal/config`",
				path, firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []byte) int {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range al {
		if i >= len(bl) || al[i] != bl[i] {
			return i + 1
		}
	}
	return len(al) + 1
}

// TestDocsContent: the reference and the man page say every visible
// option, variable, command and command flag, and nothing hidden.
func TestDocsContent(t *testing.T) {
	md, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	man, err := ManPage()
	if err != nil {
		t.Fatal(err)
	}
	// The man page as text: escapes undone, so names read as in the docs.
	manText := strings.NewReplacer(`\-`, "-", `\%`, "", `\fB`, "", `\fI`, "", `\fR`, "", `\e`, `\`).Replace(string(man))
	for _, o := range options {
		for name, doc := range map[string]string{"docs/configuration.md": string(md), "supervisor.8": manText} {
			if o.hidden {
				if strings.Contains(doc, o.env) {
					t.Errorf("%s names the hidden %s", name, o.env)
				}
				continue
			}
			if !strings.Contains(doc, o.env) || (o.flag != "" && !strings.Contains(doc, "--"+o.flag)) {
				t.Errorf("%s lacks %s / --%s", name, o.env, o.flag)
			}
		}
	}
	for _, c := range commands {
		if !strings.Contains(string(md), "### supervisor "+c.name+"\n\n`supervisor "+c.synopsis+"`") {
			t.Errorf("docs/configuration.md lacks the command %s", c.name)
		}
		if !strings.Contains(manText, "\nsupervisor "+c.synopsis+"\n") || !strings.Contains(manText, ".TP\n"+c.synopsis+"\n") {
			t.Errorf("supervisor.8 lacks the command %s", c.synopsis)
		}
		for _, f := range c.documented() {
			if !strings.Contains(string(md), "| `"+f.usageName()+"` |") {
				t.Errorf("docs/configuration.md lacks %s %s", c.name, f.usageName())
			}
		}
	}
}

// TestManPage: the page is ASCII roff whose every request is one of the
// man macros it means to use, with the sections supervisor(8) promises;
// where groff is installed, it formats the page without a warning.
func TestManPage(t *testing.T) {
	man, err := ManPage()
	if err != nil {
		t.Fatal(err)
	}
	var sections []string
	known := regexp.MustCompile(`^\.(\\"|TH|SH|SS|TP|PP|RS|RE|B|BR|I|IR|RI|br|in|ti)( |$)`)
	for i, line := range strings.Split(strings.TrimSuffix(string(man), "\n"), "\n") {
		for _, r := range line {
			if r > 126 || (r < 32 && r != '\t') {
				t.Errorf("line %d: %q is not printable ASCII", i+1, r)
			}
		}
		if strings.HasPrefix(line, "'") || (strings.HasPrefix(line, ".") && !known.MatchString(line)) {
			t.Errorf("line %d: %q would be a roff request it does not mean", i+1, line)
		}
		if line == "" {
			t.Errorf("line %d: a blank line (roff makes it a break)", i+1)
		}
		if s, ok := strings.CutPrefix(line, ".SH "); ok {
			sections = append(sections, s)
		}
	}
	want := "NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS ENVIRONMENT FILES EXIT STATUS SEE ALSO"
	if got := strings.Join(sections, " "); got != want {
		t.Errorf("sections %s, want %s", got, want)
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("no groff here: the page is checked as text alone")
		return
	}
	cmd := exec.Command(groff, "-man", "-ww", "-z")
	cmd.Stdin = bytes.NewReader(man)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}
