// Command supervisor keeps AI-agent containers healthy: it follows every
// process through the kernel's proc connector and kills each stale agent,
// with its whole process tree, the moment it crosses its maximum age.
package main

import (
	"os"

	"github.com/agent-supervisor/supervisor/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
