package tracker

import (
	"testing"
	"time"
)

// TestWaitGone: WaitGone returns when the table applies the exits of the
// agent and its tree, not before, and gives up at its deadline leaving no
// waiter behind.
func TestWaitGone(t *testing.T) {
	tb, procs := scannedTable(t, shell)
	forkClaude(tb, procs.stat, 200, 1_000)
	tb.Apply(execEv(200))
	tb.Apply(fork(200, 300, 2_000))
	due := tb.Queue().PopDue(1<<62, nil)
	if len(due) != 1 {
		t.Fatalf("%d agents due, want 1", len(due))
	}
	p := due[0].Proc()
	child := tb.Descendants(p, ReasonMaxAge, nil)
	if len(child) != 1 || child[0].PID != 300 {
		t.Fatalf("descendants %+v", child)
	}

	if tb.WaitGone(time.Now().Add(20*time.Millisecond), p, child) {
		t.Fatal("gone while both live")
	}
	tb.mu.Lock()
	left := len(tb.gone.m)
	tb.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d waiters left after a timeout", left)
	}

	done := make(chan bool)
	go func() { done <- tb.WaitGone(time.Now().Add(10*time.Second), p, child) }()
	tb.Apply(exitEv(200, 200, 3_000))
	select {
	case <-done:
		t.Fatal("gone while the child lives")
	case <-time.After(20 * time.Millisecond):
	}
	tb.Apply(exitEv(300, 300, 4_000))
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("WaitGone reported false after both exits")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitGone not woken by the exits")
	}
	tb.Release(p)
}
