package daemon

import (
	"errors"
	"fmt"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// behindTable answers ErrNoProcess the first n calls: the table has not
// applied the process's fork yet.
type behindTable struct {
	fakeControlTable
	n int
}

func (b *behindTable) Keep(pid int32, st tracker.Start) (tracker.LeaseResult, error) {
	if b.n > 0 {
		b.n--
		b.calls = append(b.calls, "behind")
		return tracker.LeaseResult{}, fmt.Errorf("pid %d: %w", pid, tracker.ErrNoProcess)
	}
	return b.fakeControlTable.Keep(pid, st)
}

func TestLaggingCatchesUp(t *testing.T) {
	live := tracker.Start{NS: 5 * tracker.Tick}
	alive := func(int32) (tracker.ProcInfo, error) { return tracker.ProcInfo{Start: live}, nil }

	// /proc shows the process: the command waits for the table.
	b := &behindTable{n: 3}
	if _, err := (lagging{b, alive}).Keep(7, tracker.Start{}); err != nil {
		t.Fatalf("keep after the table caught up: %v", err)
	}
	if len(b.calls) != 4 || b.calls[3] != "keep" {
		t.Errorf("calls %v, want three misses then the keep", b.calls)
	}

	// /proc has no such process: answered at once.
	b = &behindTable{n: 3}
	gone := func(int32) (tracker.ProcInfo, error) { return tracker.ProcInfo{}, tracker.ErrGone }
	if _, err := (lagging{b, gone}).Keep(7, tracker.Start{}); !errors.Is(err, tracker.ErrNoProcess) || len(b.calls) != 1 {
		t.Errorf("a process /proc does not show: %v after %v, want no such process at once", err, b.calls)
	}

	// Another process holds the PID in /proc: not the one named, answered at once.
	b = &behindTable{n: 3}
	other := tracker.Start{NS: 900 * tracker.Tick}
	if _, err := (lagging{b, alive}).Keep(7, other); !errors.Is(err, tracker.ErrNoProcess) || len(b.calls) != 1 {
		t.Errorf("a PID held by another process: %v after %v, want no such process at once", err, b.calls)
	}

	// Any other answer is the table's own.
	b = &behindTable{fakeControlTable: fakeControlTable{err: tracker.ErrNotAgent}}
	if _, err := (lagging{b, alive}).Keep(7, tracker.Start{}); !errors.Is(err, tracker.ErrNotAgent) || len(b.calls) != 1 {
		t.Errorf("not an agent: %v after %v", err, b.calls)
	}
}
