//go:build linux && cgo

package initd

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// sigchldHandler is SIGCHLD's handler as the kernel has it (rt_sigaction):
// 0 is SIG_DFL.
func sigchldHandler(t *testing.T) uintptr {
	t.Helper()
	var act struct {
		handler, flags, restorer uintptr
		mask                     uint64
	}
	if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), 0, uintptr(unsafe.Pointer(&act)), 8, 0, 0); errno != 0 {
		t.Fatal(errno)
	}
	return act.handler
}

// While the reaper thread runs, SIGCHLD is at its default action (no
// thread is woken for it at every exit); Close gives the runtime's handler
// back. Orphans are reaped and reported meanwhile.
func TestReaperThreadSIGCHLD(t *testing.T) {
	before := sigchldHandler(t)
	if before == 0 {
		t.Fatal("SIGCHLD at SIG_DFL before init started: want the runtime's handler")
	}
	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	in, err := Start(Config{Argv: []string{"/bin/sh", "-c", `for i in $(seq 20); do (sleep 0.1 &); done; sleep 0.5`},
		Procs: procs, Grace: func() time.Duration { return 2 * time.Second }, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var exits atomic.Int64
	in.SetOnExit(func(int32) { exits.Add(1) })
	if h := sigchldHandler(t); h != 0 {
		t.Errorf("SIGCHLD handler %#x while the reaper thread runs, want SIG_DFL", h)
	}
	waitDone(t, in, 30*time.Second)
	in.Close()
	if h := sigchldHandler(t); h != before {
		t.Errorf("SIGCHLD handler %#x after Close, want the runtime's %#x back", h, before)
	}
	if st := in.Stats(); st.Reaped < 21 || uint64(exits.Load()) != st.Reaped {
		t.Errorf("stats %+v, %d exits told: want ≥ 21 reaped (CMD and 20 orphaned sleeps), every one told", st, exits.Load())
	}
	noZombies(t)
}
