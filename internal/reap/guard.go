package reap

import (
	"fmt"
	"os"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Guard holds the processes the daemon must never signal: PID 1, itself and
// its ancestors (which cannot change while it runs: a process only gains
// ancestors by being forked), and kernel threads.
type Guard struct {
	protected map[int32]bool
}

// NewGuard walks the daemon's own ancestry through procs.
func NewGuard(procs StatReader) (*Guard, error) {
	// PID 2 is kthreadd only in the initial PID namespace; kernel threads
	// are refused by their PF_KTHREAD flag instead.
	g := &Guard{protected: map[int32]bool{0: true, 1: true}}
	pid := int32(os.Getpid())
	for i := 0; pid > 1 && i < 4096; i++ {
		g.protected[pid] = true
		info, err := procs.Stat(pid)
		if err != nil {
			return nil, fmt.Errorf("read ancestry of the daemon at pid %d: %w", pid, err)
		}
		pid = info.PPID
	}
	return g, nil
}

// Allowed reports whether pid may be signalled.
func (g *Guard) Allowed(pid int32, kthread bool) bool {
	return pid > 1 && !kthread && !g.protected[pid]
}

// Protected lists the protected PIDs.
func (g *Guard) Protected() []int32 {
	out := make([]int32, 0, len(g.protected))
	for p := range g.protected {
		out = append(out, p)
	}
	return out
}

var _ StatReader = (*tracker.ProcFS)(nil)
