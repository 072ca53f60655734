package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeSampleConfig runs every `sh` block of README.md and docs/*.md
// that is a config file (its first line names /etc/agent-supervisor/config)
// through the daemon's own parser: a sample that exits 2 is worse than none.
func TestReadmeSampleConfig(t *testing.T) {
	files := []string{filepath.Join("..", "..", "README.md")}
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, docs...)
	var blocks []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cur []string
		in := false
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case !in && strings.TrimSpace(line) == "```sh":
				in, cur = true, nil
			case in && strings.TrimSpace(line) == "```":
				in = false
				if len(cur) > 0 && strings.TrimSpace(cur[0]) == "# /etc/agent-supervisor/config" {
					blocks = append(blocks, strings.Join(cur, "\n")+"\n")
				}
			case in:
				cur = append(cur, line)
			}
		}
	}
	if len(blocks) == 0 {
		t.Fatal("no sample config block (```sh, first line # /etc/agent-supervisor/config) in README.md or docs/*.md")
	}
	for i, text := range blocks {
		f := filepath.Join(t.TempDir(), "config")
		if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Parse("run", nil, env("REAPER_CONFIG", f), io.Discard)
		if err != nil {
			t.Fatalf("sample config %d (README.md, docs/*.md): the daemon refuses it: %v\n%s", i, err, text)
		}
		if strings.Contains(text, "REAPER_SESSION_MAX_MEMORY=6GiB") && c.SessionMaxMemory != 6<<30 {
			t.Errorf("sample %d: session max memory %d, want 6 GiB", i, c.SessionMaxMemory)
		}
		if strings.Contains(text, "REAPER_KEEP=node:next dev") && (len(c.Keep) != 1 || c.Keep[0].String() != "node:next dev") {
			t.Errorf("sample %d: keep %v, want [node:next dev]", i, c.Keep)
		}
	}
}
