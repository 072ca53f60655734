package tracker

import "testing"

// Under init, the daemon polls /proc and is told of its children's exits
// by waitid at once: the exit is applied then, a scan taken before it does
// not bring the process back, and a later holder of the PID is a new
// process.
func TestExitedWhilePolling(t *testing.T) {
	procs := newFakeProcs()
	clock := &fakeClock{now: offset + 1_000}
	procs.stat[1] = ProcInfo{PID: 1, PPID: 0, Start: FromTicks(1), Comm: "supervisor", State: 'S'}
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(10), Comm: "claude", State: 'S'}
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(20), Comm: "sleep", State: 'S'}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock, Leftovers: true, LeftoverGrace: grace})
	tb.Merge(must(procs.Scan()), false)
	if _, ok := agents(tb)[200]; !ok {
		t.Fatal("claude is not an agent")
	}
	scanDone := tb.ScanStart()
	stale := must(procs.Scan()) // taken before the exit, merged after it

	// The agent exits: a zombie until its parent (init) reaps it.
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(10), Comm: "claude", State: 'Z'}
	at := offset + 1_500
	tb.Exited(200, at)
	if _, ok := tb.Lookup(200); ok {
		t.Fatal("exited agent still in the table")
	}
	if _, ok := agents(tb)[200]; ok {
		t.Fatal("exited agent still queued")
	}
	if a, ok := leftovers(tb)[210]; !ok || a.Deadline != at+int64(grace) {
		t.Fatalf("leftover 210 %+v %v, want the exit + grace", a, ok)
	}
	delete(procs.stat, 200) // reaped

	tb.Merge(stale, false)
	scanDone()
	if _, ok := tb.Lookup(200); ok {
		t.Fatal("a scan taken before the exit brought the agent back")
	}
	if _, ok := agents(tb)[200]; ok {
		t.Fatal("a scan taken before the exit queued the agent again")
	}
	if len(tb.exited.m) != 1 {
		t.Fatalf("tombstones %v, want 200's until a scan no longer shows it", tb.exited.m)
	}
	tb.Merge(must(procs.Scan()), false)
	if len(tb.exited.m) != 0 {
		t.Fatalf("tombstones %v after a scan without 200", tb.exited.m)
	}
	// A new holder of PID 200 is a new process.
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(300), Comm: "claude", State: 'S'}
	tb.Merge(must(procs.Scan()), false)
	if _, ok := agents(tb)[200]; !ok {
		t.Fatal("the next holder of the PID was not taken")
	}
}

// An exit told for a PID the table does not hold, or whose zombie is no
// longer readable, removes what the table holds under the PID and nothing
// else.
func TestExitedUnknown(t *testing.T) {
	tb, procs := scannedTable(t, ProcInfo{PID: 300, PPID: 1, Start: FromTicks(10), Comm: "sh", State: 'S'})
	tb.Exited(999, 5)
	if _, ok := tb.Lookup(300); !ok {
		t.Fatal("an unrelated exit removed 300")
	}
	delete(procs.stat, 300)
	tb.Exited(300, 5)
	if _, ok := tb.Lookup(300); ok {
		t.Fatal("300 still in the table")
	}
	if st := tb.Stats(); st.ProcErrs != 0 {
		t.Errorf("a vanished zombie counted as a /proc error: %d", st.ProcErrs)
	}
}

// With no scan in flight, an exit is applied without a /proc read and
// leaves no tombstone: a scan that starts after it shows the zombie (gone)
// or nothing. That is each orphan's exit under init, reaped between polls.
func TestExitedNoScanInFlight(t *testing.T) {
	tb, procs := scannedTable(t, ProcInfo{PID: 300, PPID: 1, Start: FromTicks(10), Comm: "sh", State: 'S'})
	procs.stat[300] = ProcInfo{PID: 300, PPID: 1, Start: FromTicks(10), Comm: "sh", State: 'Z'}
	r0 := procs.reads
	tb.Exited(999, 5) // an orphan the table never saw
	tb.Exited(300, 5)
	if procs.reads != r0 {
		t.Errorf("%d /proc reads for two exits with no scan in flight, want none", procs.reads-r0)
	}
	if _, ok := tb.Lookup(300); ok {
		t.Fatal("300 still in the table")
	}
	if len(tb.exited.m) != 0 {
		t.Fatalf("tombstones %v with no scan in flight", tb.exited.m)
	}
	tb.Merge(must(procs.Scan()), false) // the zombie: gone
	if _, ok := tb.Lookup(300); ok {
		t.Fatal("a scan showing the zombie brought 300 back")
	}
	// A scan's done called twice ends it once.
	done := tb.ScanStart()
	done()
	done()
	if tb.exited.scanning() {
		t.Fatal("a scan still in flight after its done")
	}
}
