package tracker

import (
	"sync"
	"sync/atomic"
)

// Exits told by a parent. Polling /proc learns of an exit up to one poll
// interval late; under `supervisor init` the daemon is PID 1 of its
// namespace (or a child subreaper), the parent of CMD and of every orphan,
// and learns of their exits at once from waitid(2). Exited (table.go)
// applies such an exit to the table as an exit event would: a dead member
// is never taken for a live one until the next poll, and a session's agent
// leaving starts its leftovers' grace at the exit, not at the poll that
// noticed it.
//
// A /proc scan taken before the exit still shows the process alive; Merge
// would bring it back. So the exit is remembered (PID and start time) in
// the table's exitLog until a scan no longer shows that process. Only a
// scan in flight at the exit can show it alive: the callers of Merge say
// when one is (Table.ScanStart), and with none in flight Exited neither
// reads /proc nor remembers anything.

// exitedMax bounds the tombstones Exited keeps: a polling loop that stopped
// would otherwise let them grow with every exit.
const exitedMax = 1 << 16

// exitLog holds the exits Exited was told of (tombstones), by PID, until a
// scan no longer shows them. Its methods run under the table's lock, which
// guards it.
type exitLog struct {
	m map[int32]Start
	// scans counts the /proc scans in flight, from ScanStart to their
	// done; read without the table's lock. A scan that starts after an
	// exit reads the process as a zombie or not at all: only one counted
	// here when Exited is told can bring the process back.
	scans atomic.Int32
}

// scanStart counts a scan in flight until the returned done is called
// (once; later calls do nothing).
func (e *exitLog) scanStart() (done func()) {
	e.scans.Add(1)
	var once sync.Once
	return func() { once.Do(func() { e.scans.Add(-1) }) }
}

// scanning reports whether a scan is in flight.
func (e *exitLog) scanning() bool { return e.scans.Load() > 0 }

// recordLocked remembers the exit of the process pid that started at s.
func (e *exitLog) recordLocked(pid int32, s Start) {
	if e.m == nil || len(e.m) >= exitedMax {
		e.m = make(map[int32]Start)
	}
	e.m[pid] = s
}

// toldLocked reports whether Exited was told of the exit of the process
// info shows.
func (e *exitLog) toldLocked(info *ProcInfo) bool {
	s, ok := e.m[info.PID]
	return ok && s.Same(info.Start)
}

// pruneLocked forgets the exits a scan no longer shows: a later scan cannot
// show them either.
func (e *exitLog) pruneLocked(scan []ProcInfo) {
	if len(e.m) == 0 {
		return
	}
	shown := make(map[int32]Start, len(e.m))
	for i := range scan {
		if _, ok := e.m[scan[i].PID]; ok {
			shown[scan[i].PID] = scan[i].Start
		}
	}
	for pid, s := range e.m {
		if o, ok := shown[pid]; !ok || !o.Same(s) {
			delete(e.m, pid)
		}
	}
}
