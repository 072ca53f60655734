// Command gendocs writes the files internal/config generates from its
// tables (docs/configuration.md, the man page docs/supervisor.8): run by
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
		if err := os.WriteFile(filepath.Join(*root, p), files[p], 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
			os.Exit(1)
		}
	}
}
