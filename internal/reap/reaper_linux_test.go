//go:build linux

package reap

import (
	"errors"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// leafTree is a table that knows no descendants and has seen every exit:
// the reaper's logic on one real process.
type leafTree struct{}

func (leafTree) Descendants(*tracker.Proc, tracker.Reason, []tracker.Target) []tracker.Target {
	return nil
}
func (leafTree) WaitGone(time.Time, *tracker.Proc, []tracker.Target) bool { return true }
func (leafTree) Retry(*tracker.Agent, []tracker.Target) ([]int32, int64)  { return nil, 0 }
func (leafTree) Release(*tracker.Proc)                                    {}

type recorder struct {
	mu       sync.Mutex
	signals  []Result
	results  []Result
	finished chan struct{}
}

// add records res in to (rec.signals or rec.results).
func (rec *recorder) add(to *[]Result, res Result) {
	rec.mu.Lock()
	*to = append(*to, res)
	rec.mu.Unlock()
}

// testReaper is New(cfg) on the real /proc, with its guard and the system
// clock.
func testReaper(t *testing.T, cfg Config) *Reaper {
	t.Helper()
	procs := procFS(t)
	g, err := NewGuard(procs)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Procs, cfg.Clock, cfg.Guard = procs, tracker.SystemClock{}, g
	return New(cfg)
}

func newReaper(t *testing.T, grace time.Duration) (*Reaper, *recorder) {
	t.Helper()
	rec := &recorder{finished: make(chan struct{}, 16)}
	r := testReaper(t, Config{Grace: grace, Tree: leafTree{},
		OnSignal: func(res Result) { rec.add(&rec.signals, res) },
		OnResult: func(res Result) {
			rec.add(&rec.results, res)
			rec.finished <- struct{}{}
		}})
	return r, rec
}

// agentFor describes a child as the queue would hand it over, without a
// pidfd (FD -1: queued over the descriptor budget), so the reaper pins it.
func agentFor(t *testing.T, c *exec.Cmd, seq uint64) *tracker.Agent {
	t.Helper()
	info, err := procFS(t).Stat(int32(c.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	now := tracker.SystemClock{}.Now()
	return &tracker.Agent{PID: info.PID, Start: info.Start, Comm: info.Comm, Deadline: now, Fired: now, FD: -1, Seq: seq}
}

func waitResult(t *testing.T, r *Reaper, rec *recorder) Result {
	t.Helper()
	done := make(chan struct{})
	go func() { r.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Reaper.Wait did not return within 30 s")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.results) != 1 {
		t.Fatalf("%d results, want 1", len(rec.results))
	}
	return rec.results[0]
}

// TestReapUnpinnedAgent: an agent queued without a pidfd is pinned and
// signalled when due, not reported as a dry run; OnSignal comes first with
// the pending row, then OnResult with the same Seq.
func TestReapUnpinnedAgent(t *testing.T) {
	c := child(t)
	r, rec := newReaper(t, 5*time.Second)
	a := agentFor(t, c, 42)
	r.Fire([]*tracker.Agent{a})
	res := waitResult(t, r, rec)
	if res.Outcome != OutcomeTerminated || res.FinalSignal != "TERM" || res.DryRun || res.Seq != 42 || res.Exited == 0 {
		t.Errorf("result %+v, want terminated by TERM, seq 42", res)
	}
	if res.Signalled < a.Deadline {
		t.Errorf("signalled %d before the deadline %d", res.Signalled, a.Deadline)
	}
	if len(rec.signals) != 1 || rec.signals[0].Outcome != OutcomePending || rec.signals[0].FinalSignal != "TERM" || rec.signals[0].Seq != 42 {
		t.Errorf("OnSignal got %+v, want one pending TERM row with seq 42", rec.signals)
	}
	if st := c.Wait(); st == nil || c.ProcessState.Success() {
		t.Errorf("child not killed: %v", c.ProcessState)
	}
}

// TestReapTermIgnoring: SIGTERM ignored, SIGKILL after the grace period.
func TestReapTermIgnoring(t *testing.T) {
	c := exec.Command("sh", "-c", `trap "" TERM; exec sleep 60`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	time.Sleep(100 * time.Millisecond) // let sh set the trap and exec
	r, rec := newReaper(t, 300*time.Millisecond)
	r.Fire([]*tracker.Agent{agentFor(t, c, 1)})
	res := waitResult(t, r, rec)
	if res.Outcome != OutcomeKilled || res.FinalSignal != "KILL" {
		t.Errorf("outcome %s by %s, want killed by KILL", res.Outcome, res.FinalSignal)
	}
}

// TestReapEPERM: a signal the kernel refuses (EPERM: another user's
// process, without CAP_KILL) is outcome failed, never killed or
// terminated, and no pending row is written. Root may signal anything, so
// the refusal comes through the reaper's signal seam; the process is real
// and really survives.
func TestReapEPERM(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fireFD bool // the deadline thread sent SIGTERM and got EPERM
	}{{"pinned when due", false}, {"signalled by the deadline thread", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := child(t)
			r, rec := newReaper(t, 200*time.Millisecond)
			r.send = func(fd int, sig unix.Signal) error {
				if sig == unix.SIGCONT {
					return nil
				}
				return unix.EPERM
			}
			a := agentFor(t, c, 7)
			if tc.fireFD {
				fd, err := r.pins.pin(a.PID, a.Start, 1<<30)
				if err != nil {
					t.Fatal(err)
				}
				a.FD, a.FireErr = fd, unix.EPERM
			}
			r.Fire([]*tracker.Agent{a})
			res := waitResult(t, r, rec)
			if res.Outcome != OutcomeFailed || res.Exited != 0 {
				t.Errorf("outcome %s (exited %d), want failed", res.Outcome, res.Exited)
			}
			if len(rec.signals) != 0 {
				t.Errorf("OnSignal called for a refused signal: %+v", rec.signals)
			}
			if r.Stats().SignalErrors == 0 {
				t.Error("the refused signal was not counted")
			}
			if err := unix.Kill(c.Process.Pid, 0); err != nil {
				t.Errorf("the process is gone (%v); the seam should have kept it alive", err)
			}
		})
	}
}

// TestReapBudget: over the descriptor budget the Pinner defers (FD -1, nil
// error) after checking the start time, and a reused PID is still ErrGone.
func TestReapBudget(t *testing.T) {
	c := child(t)
	procs := procFS(t)
	p := NewPins(procs, nil)
	p.matchCap = 0 // every descriptor is over the budget
	info, err := procs.Stat(int32(c.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fd, err := p.Pinner()(info.PID, info.Start)
	if fd != -1 || err != nil {
		t.Fatalf("over budget: fd %d, %v; want -1, nil", fd, err)
	}
	if p.Stats().Deferred != 1 {
		t.Errorf("deferred %d, want 1", p.Stats().Deferred)
	}
	wrong := tracker.Start{NS: info.Start.NS - 10*tracker.Tick}
	if _, err := p.Pinner()(info.PID, wrong); !errors.Is(err, tracker.ErrGone) {
		t.Errorf("reused pid over budget: %v, want ErrGone", err)
	}
}
