//go:build race

package e2e

// Built with -race, the tests build the daemon with -race too, so races in
// the daemon under real workloads fail the run (the race detector exits 66).
func init() { buildFlags = append(buildFlags, "-race") }
