// Command gendocs writes the files internal/config generates from its
// tables (docs/configuration.md, the man page docs/supervisor.8, the
// package's config file and shell completions in packaging/): run by
// `go generate ./internal/config`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/agent-supervisor/supervisor/internal/config"
)

func main() {
	root := flag.String("root", ".", "the repository's root")
	flag.Parse()
	files, err := config.Generated()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
		os.Exit(1)
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		path := filepath.Join(*root, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, files[p], 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
			os.Exit(1)
		}
	}
}
