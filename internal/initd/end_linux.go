//go:build linux

package initd

import (
	"errors"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Bounds of the end: how often /proc is looked at while waiting, how long
// SIGKILL is repeated for processes that do not die (uninterruptible
// sleep), and how long their zombies may take to be reaped.
const (
	endPoll      = 20 * time.Millisecond
	killBound    = 10 * time.Second
	reapedBound  = 5 * time.Second
	maxEndRounds = 1 << 20
)

// finish ends what CMD left, waits for it to be reaped and closes done.
func (in *Init) finish() {
	defer close(in.done)
	if !in.ownProc {
		return
	}
	in.terminate(in.cfg.Grace())
	deadline := time.Now().Add(reapedBound)
	for len(in.others(true)) > 0 && time.Now().Before(deadline) {
		select {
		case <-in.stop:
			return
		case <-time.After(endPoll):
		}
	}
	if left := in.others(true); len(left) > 0 {
		in.log.Warn("processes left unreaped", zap.Int("count", len(left)), zap.Int32("first_pid", left[0].PID))
	}
}

// terminate sends SIGTERM (and SIGCONT) to every process others returns,
// including those that appear meanwhile, and SIGKILL to those still alive
// after grace.
func (in *Init) terminate(grace time.Duration) {
	left := in.others(false)
	if len(left) == 0 {
		return
	}
	in.log.Info("command exited: terminating what is left", zap.Int("processes", len(left)), zap.Duration("kill_grace", grace),
		zap.Bool("pid1", in.pid1))
	t0 := time.Now()
	deadline := t0.Add(grace)
	termed := map[int32]tracker.Start{}
	for round := 0; len(left) > 0 && round < maxEndRounds; round++ {
		for _, p := range left {
			if s, ok := termed[p.PID]; ok && s.Same(p.Start) {
				continue
			}
			termed[p.PID] = p.Start
			if in.signal(p, unix.SIGTERM) {
				in.signal(p, unix.SIGCONT) // a stopped process acts on SIGTERM only once continued
				in.terminated.Add(1)
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		select {
		case <-in.stop:
			return
		case <-time.After(min(wait, endPoll)):
		}
		left = in.others(false)
	}
	killed := 0
	for round := 0; round < maxEndRounds; round++ {
		if left = in.others(false); len(left) == 0 {
			break
		}
		if time.Since(deadline) > killBound {
			in.log.Warn("processes survive SIGKILL", zap.Int("count", len(left)), zap.Int32("first_pid", left[0].PID))
			break
		}
		for _, p := range left {
			if in.signal(p, unix.SIGKILL) {
				killed++
			}
		}
		select {
		case <-in.stop:
			return
		case <-time.After(endPoll):
		}
	}
	in.log.Info("what the command left is gone", zap.Int("terminated", len(termed)), zap.Int("killed", killed),
		zap.Duration("took", time.Since(t0)))
}

// signal sends sig to p through a pidfd opened and then checked against
// p's start time: if the check passes the pidfd names p (or a p that has
// exited since, which no signal reaches), never a later holder of the PID.
// It reports whether the signal was sent.
func (in *Init) signal(p tracker.ProcInfo, sig unix.Signal) bool {
	if in.guard == nil || !in.guard.Allowed(p.PID, p.Kthread) {
		return false
	}
	fd, err := unix.PidfdOpen(int(p.PID), 0)
	if err != nil {
		return false // ESRCH: gone
	}
	defer unix.Close(fd)
	info, err := in.cfg.Procs.Stat(p.PID)
	if err != nil || !info.Start.Same(p.Start) {
		return false
	}
	err = unix.PidfdSendSignal(fd, sig, nil, 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		in.log.Warn("signal", zap.Int32("pid", p.PID), zap.String("signal", unix.SignalName(sig)), zap.Error(err))
	}
	return err == nil
}

// others lists the processes that are ours to end: as PID 1 every process
// of the namespace but us, as a subreaper our descendants; neither the
// children os/exec owns (running hooks) nor their descendants, which the
// daemon's shutdown bounds; never kernel threads. zombies: list only
// zombies (what is left to reap); else only live processes.
func (in *Init) others(zombies bool) []tracker.ProcInfo {
	scan, err := in.cfg.Procs.Scan()
	if err != nil {
		in.log.Warn("scan /proc", zap.Error(err))
		return nil
	}
	in.mu.Lock()
	skip := make(map[int32]bool, len(in.owned)+1)
	for pid := range in.owned {
		skip[int32(pid)] = true
	}
	in.mu.Unlock()
	return pick(scan, int32(in.self), in.pid1, skip, zombies)
}

// pick is others' choice from a scan (a pure function, tested alone).
func pick(scan []tracker.ProcInfo, self int32, all bool, skip map[int32]bool, zombies bool) []tracker.ProcInfo {
	children := make(map[int32][]int, len(scan))
	for i := range scan {
		children[scan[i].PPID] = append(children[scan[i].PPID], i)
	}
	// What the skipped processes started is skipped too.
	stack := make([]int32, 0, len(skip))
	for pid := range skip {
		stack = append(stack, pid)
	}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, i := range children[pid] {
			if c := scan[i].PID; !skip[c] {
				skip[c] = true
				stack = append(stack, c)
			}
		}
	}
	mine := func(i int) bool { return true }
	if !all {
		desc := map[int32]bool{}
		stack = append(stack[:0], self)
		for len(stack) > 0 {
			pid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, i := range children[pid] {
				if c := scan[i].PID; c != self && !desc[c] {
					desc[c] = true
					stack = append(stack, c)
				}
			}
		}
		mine = func(i int) bool { return desc[scan[i].PID] }
	}
	var out []tracker.ProcInfo
	for i := range scan {
		p := &scan[i]
		if p.PID == self || p.Kthread || skip[p.PID] || !mine(i) {
			continue
		}
		if zombies != p.Live() {
			out = append(out, *p)
		}
	}
	return out
}
