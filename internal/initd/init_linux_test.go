//go:build linux

package initd

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// These tests run init in the test process itself, as a child subreaper
// (the test binary is not PID 1): CMD is a shell, every orphan it makes is
// reparented to the test process and must be reaped by init. Everything
// signalled is a descendant of the test process.

func startInit(t *testing.T, fwd Forward, script string) (*Init, *atomic.Int64) {
	t.Helper()
	procs, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	in, err := Start(Config{Argv: []string{"/bin/sh", "-c", script}, Forward: fwd, Procs: procs,
		Grace: func() time.Duration { return 2 * time.Second }, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var exits atomic.Int64
	in.SetOnExit(func(int32) { exits.Add(1) })
	t.Cleanup(func() {
		select {
		case <-in.Done():
		case <-time.After(30 * time.Second):
			t.Error("init not done within 30 s")
		}
		in.Close()
		noZombies(t)
	})
	return in, &exits
}

func waitDone(t *testing.T, in *Init, bound time.Duration) {
	t.Helper()
	select {
	case <-in.Done():
	case <-time.After(bound):
		t.Fatalf("init not done within %s", bound)
	}
}

// noZombies fails if the test process has an exited child no one reaped,
// or any child at all: what CMD left is gone.
func noZombies(t *testing.T) {
	t.Helper()
	pid, err := peek()
	if err == nil && pid != 0 {
		t.Errorf("child %d left a zombie", pid)
	}
	if err == nil {
		t.Error("children left alive")
	} else if !errors.Is(err, unix.ECHILD) {
		t.Error(err)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	end := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s not written within 20 s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CMD's status comes back; 30 double-forked orphans are reaped; a
// background process CMD left is terminated at its exit.
func TestOrphansReapedLeftoversEnded(t *testing.T) {
	left := filepath.Join(t.TempDir(), "left")
	in, exits := startInit(t, ForwardChild,
		`for i in $(seq 30); do (sleep 0.2 &); done; (trap 'echo > `+left+`; exit 0' TERM; while :; do sleep 0.05; done) & exit 3`)
	<-in.Exited()
	waitDone(t, in, 30*time.Second)
	// It went at SIGTERM (its trap ran), not at the SIGKILL after the grace.
	if _, err := os.Stat(left); err != nil {
		t.Errorf("the leftover's TERM trap did not run: %v", err)
	}
	if in.Status() != 3 {
		t.Errorf("status %d, want 3", in.Status())
	}
	st := in.Stats()
	if st.Reaped < 32 || st.Terminated < 1 {
		t.Errorf("stats %+v: want ≥ 32 reaped (CMD, 30 sleeps, the leftover) and the leftover terminated", st)
	}
	if exits.Load() != int64(st.Reaped) {
		t.Errorf("%d exits told, %d reaped", exits.Load(), st.Reaped)
	}
}

func TestSignalledStatus(t *testing.T) {
	in, _ := startInit(t, ForwardChild, `kill -KILL $$`)
	waitDone(t, in, 10*time.Second)
	if in.Status() != 128+9 {
		t.Errorf("status %d, want 137", in.Status())
	}
}

// SIGTERM to init reaches CMD, whose trap's exit code comes back.
func TestForwardTerm(t *testing.T) {
	dir := t.TempDir()
	in, _ := startInit(t, ForwardChild, `trap 'exit 7' TERM; echo > `+dir+`/ready; while :; do sleep 0.05; done`)
	waitFile(t, dir+"/ready")
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDone(t, in, 10*time.Second)
	if in.Status() != 7 || in.Stats().Forwarded < 1 {
		t.Errorf("status %d, forwarded %d; want 7, ≥ 1", in.Status(), in.Stats().Forwarded)
	}
}

// --forward-to group reaches what CMD started; child reaches CMD alone.
func TestForwardGroup(t *testing.T) {
	for _, fwd := range []Forward{ForwardGroup, ForwardChild} {
		t.Run(fwd.String(), func(t *testing.T) {
			dir := t.TempDir()
			// The inner shell traps TERM too: once CMD is dead, init
			// terminates what is left, and under load that SIGTERM can
			// come before the shell ran its USR1 trap; with both trapped
			// the shell runs them in signal-number order (USR1 first), so
			// the test sees whether USR1 arrived, not who was faster.
			inner := `trap 'echo > ` + dir + `/got' USR1; trap 'exit 0' TERM; echo > ` + dir + `/ready; while :; do sleep 0.05; done`
			in, _ := startInit(t, fwd, `/bin/sh -c "`+inner+`" & wait`)
			waitFile(t, dir+"/ready")
			unix.Kill(os.Getpid(), unix.SIGUSR1)
			<-in.Exited() // CMD dies of SIGUSR1 either way
			if in.Status() != 128+int(unix.SIGUSR1) {
				t.Errorf("status %d", in.Status())
			}
			waitDone(t, in, 10*time.Second)
			_, err := os.Stat(dir + "/got")
			if got := err == nil; got != (fwd == ForwardGroup) {
				t.Errorf("forward to %s: CMD's child got SIGUSR1: %v", fwd, got)
			}
		})
	}
}

// The children os/exec starts and waits for (hooks) are never reaped by
// init, even while it reaps a storm of orphans: each Wait gets its own
// child's status.
func TestOwnedChildrenLeftToOsExec(t *testing.T) {
	dir := t.TempDir()
	in, _ := startInit(t, ForwardChild, `for i in $(seq 300); do (true &); done; while [ ! -e `+dir+`/stop ]; do sleep 0.05; done`)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				c := exec.Command("/bin/sh", "-c", "exit 5")
				err := in.Own(func() (int, error) {
					if err := c.Start(); err != nil {
						return 0, err
					}
					return c.Process.Pid, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				err = c.Wait()
				in.Disown(c.Process.Pid)
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 5 {
					bad.Add(1)
					t.Errorf("os/exec's child: %v (init reaped it?)", err)
				}
			}
		}()
	}
	wg.Wait()
	os.WriteFile(filepath.Join(dir, "stop"), nil, 0o600)
	waitDone(t, in, 20*time.Second)
	if in.Status() != 0 || bad.Load() != 0 {
		t.Errorf("status %d, %d os/exec waits failed", in.Status(), bad.Load())
	}
	if st := in.Stats(); st.Reaped < 301 {
		t.Errorf("reaped %d, want ≥ 301", st.Reaped)
	}
}

// A storm of 1,000 short-lived orphans with a signal in the middle: the
// signal is not lost (CMD's trap notes it, CMD exits 9 after the storm
// only if it did) and every orphan is reaped, no zombie left.
func TestStormNoLostSignalNoZombie(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 orphans")
	}
	dir := t.TempDir()
	in, _ := startInit(t, ForwardChild, `trap 'echo > `+dir+`/got' TERM; for i in $(seq 1000); do (true &); done; `+
		`while [ ! -e `+dir+`/got ]; do sleep 0.05; done; exit 9`)
	for in.Stats().Reaped < 300 {
		time.Sleep(time.Millisecond)
	}
	unix.Kill(os.Getpid(), unix.SIGTERM)
	waitDone(t, in, 60*time.Second)
	if in.Status() != 9 {
		t.Errorf("status %d, want 9 (the trap saw SIGTERM)", in.Status())
	}
	if st := in.Stats(); st.Reaped < 1001 {
		t.Errorf("reaped %d, want every orphan and CMD (≥ 1,001)", st.Reaped)
	}
}
