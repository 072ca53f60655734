//go:build linux

package reap

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

// retryTree is a table whose agent has the descendants it is given, has
// seen every exit, and records what the reaper asks it to retry.
type retryTree struct {
	below []tracker.Target

	mu      sync.Mutex
	retries [][]tracker.Target
	agents  []*tracker.Agent
}

func (r *retryTree) Descendants(_ *tracker.Proc, _ tracker.Reason, buf []tracker.Target) []tracker.Target {
	return append(buf, r.below...)
}
func (r *retryTree) WaitGone(time.Time, *tracker.Proc, []tracker.Target) bool { return true }
func (r *retryTree) Release(*tracker.Proc)                                    {}
func (r *retryTree) Retry(a *tracker.Agent, alive []tracker.Target) ([]int32, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, append([]tracker.Target(nil), alive...))
	r.agents = append(r.agents, a)
	var pids []int32
	for _, t := range alive {
		pids = append(pids, t.PID)
	}
	return pids, 12345
}

// pidOfFD reads which process a pidfd refers to.
func pidOfFD(fd int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func retryReaper(t *testing.T, tree *retryTree, dryRun bool) (*Reaper, *recorder) {
	t.Helper()
	rec := &recorder{finished: make(chan struct{}, 16)}
	r := testReaper(t, Config{Grace: 300 * time.Millisecond, Tree: tree, DryRun: dryRun,
		OnResult: func(res Result) { rec.add(&rec.results, res) }})
	return r, rec
}

func targetOf(t *testing.T, pid int) tracker.Target {
	t.Helper()
	info, err := procFS(t).Stat(int32(pid))
	if err != nil {
		t.Fatal(err)
	}
	return tracker.Target{PID: info.PID, Start: info.Start, Comm: info.Comm}
}

// A kill the kernel refuses is handed back to the table for a retry, with
// every process still alive, and the result says so; a retry's result
// carries its attempt and the first kill's deadline.
func TestReapRetriesRefusedAgent(t *testing.T) {
	c := child(t)
	tree := &retryTree{}
	r, rec := retryReaper(t, tree, false)
	r.send = func(fd int, sig unix.Signal) error {
		if sig == unix.SIGCONT {
			return nil
		}
		return unix.EPERM
	}
	a := agentFor(t, c, 3)
	a.Attempt, a.FirstDeadline = 2, a.Deadline-int64(time.Minute)
	r.Fire([]*tracker.Agent{a})
	res := waitResult(t, r, rec)
	if res.Outcome != OutcomeFailed || len(res.Retried) != 1 || res.Retried[0] != int32(c.Process.Pid) || res.RetryAt != 12345 {
		t.Fatalf("result %+v: want failed, %d retried at 12345", res, c.Process.Pid)
	}
	if res.Attempt != 2 || res.Deadline != a.FirstDeadline {
		t.Errorf("attempt %d deadline %d, want attempt 2 and the first deadline %d", res.Attempt, res.Deadline, a.FirstDeadline)
	}
	if len(tree.retries) != 1 || len(tree.retries[0]) != 1 || tree.retries[0][0].PID != int32(c.Process.Pid) ||
		!tree.retries[0][0].Start.Same(a.Start) || tree.agents[0] != a {
		t.Errorf("Retry called with %+v, want the agent itself", tree.retries)
	}
}

// The agent dies but a member of its tree cannot be signalled: the member
// alone is retried.
func TestReapRetriesSurvivingMember(t *testing.T) {
	agentProc, member := child(t), child(t)
	tree := &retryTree{below: []tracker.Target{targetOf(t, member.Process.Pid)}}
	r, rec := retryReaper(t, tree, false)
	r.send = func(fd int, sig unix.Signal) error {
		if pidOfFD(fd) == member.Process.Pid {
			return unix.EPERM
		}
		return signal(fd, sig)
	}
	r.Fire([]*tracker.Agent{agentFor(t, agentProc, 4)})
	res := waitResult(t, r, rec)
	if res.Outcome != OutcomeFailed {
		t.Fatalf("outcome %s, want failed", res.Outcome)
	}
	if len(tree.retries) != 1 || len(tree.retries[0]) != 1 || tree.retries[0][0].PID != int32(member.Process.Pid) {
		t.Fatalf("Retry called with %+v, want only the member %d (the agent is dead)", tree.retries, member.Process.Pid)
	}
	if err := unix.Kill(member.Process.Pid, 0); err != nil {
		t.Errorf("member gone (%v); the seam should have kept it alive", err)
	}
}

// Nothing is retried in a dry run, for a protected process, or with
// NoRetry (supervisor once).
func TestReapNoRetry(t *testing.T) {
	eperm := func(fd int, sig unix.Signal) error { return unix.EPERM }
	for _, tc := range []struct {
		name    string
		dry     bool
		noRetry bool
		self    bool // the agent is the test process: refused by the guard
	}{{name: "dry run", dry: true}, {name: "once", noRetry: true}, {name: "guard", self: true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := child(t)
			tree := &retryTree{}
			r, rec := retryReaper(t, tree, tc.dry)
			r.send = eperm
			if tc.noRetry {
				r.NoRetry()
			}
			a := agentFor(t, c, 5)
			if tc.self {
				st, err := procFS(t).Stat(int32(os.Getpid()))
				if err != nil {
					t.Fatal(err)
				}
				a.PID, a.Start = st.PID, st.Start
			}
			r.Fire([]*tracker.Agent{a})
			res := waitResult(t, r, rec)
			if len(tree.retries) != 0 || len(res.Retried) != 0 {
				t.Errorf("outcome %s: retried %+v", res.Outcome, tree.retries)
			}
		})
	}
}
