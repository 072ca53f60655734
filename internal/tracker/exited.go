package tracker

import "errors"

// Exits told by a parent. Polling /proc learns of an exit up to one poll
// interval late; under `supervisor init` the daemon is PID 1 of its
// namespace (or a child subreaper), the parent of CMD and of every orphan,
// and learns of their exits at once from waitid(2). Exited applies such an
// exit to the table as an exit event would: a dead member is never taken for
// a live one until the next poll, and a session's agent leaving starts its
// leftovers' grace at the exit, not at the poll that noticed it.

// exitedMax bounds the tombstones Exited keeps (see Exited): a polling
// loop that stopped would otherwise let them grow with every exit.
const exitedMax = 1 << 16

// Exited tells the table that pid has exited, at boottime at. The caller
// is its parent and calls this before it reaps it (waitid(2) with WNOWAIT
// first): while the zombie holds the PID, no other process can take it, so
// the entry under pid is this process or an earlier holder whose exit went
// unseen, dead either way. Its start time is read from the zombie's
// /proc/PID/stat, which the kernel keeps until the zombie is reaped.
//
// A /proc scan taken before the exit still shows the process alive; Merge
// would bring it back. So the exit is remembered (PID and start time) until
// a scan no longer shows that process.
func (t *Table) Exited(pid int32, at int64) {
	info, err := t.cfg.Proc.Stat(pid)
	known := err == nil
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil && !errors.Is(err, ErrGone) {
		t.c.ProcErrs++
	}
	if known {
		if t.exited == nil || len(t.exited) >= exitedMax {
			t.exited = make(map[int32]Start)
		}
		t.exited[pid] = info.Start
	}
	p := t.procs[pid]
	if p == nil {
		return
	}
	if known && !p.Start.Same(info.Start) && p.Start.StartedAfter(info.Start) {
		// Not possible while the zombie holds the PID; never remove a
		// process that started after the one that exited.
		return
	}
	t.exitAt = at
	t.removeLocked(p)
	t.exitAt = 0
}

// exitedLocked reports whether Exited was told of the exit of the process
// info shows.
func (t *Table) exitedLocked(info *ProcInfo) bool {
	s, ok := t.exited[info.PID]
	return ok && s.Same(info.Start)
}

// pruneExitedLocked forgets the exits a scan no longer shows: a later scan
// cannot show them either.
func (t *Table) pruneExitedLocked(scan []ProcInfo) {
	if len(t.exited) == 0 {
		return
	}
	shown := make(map[int32]Start, len(t.exited))
	for i := range scan {
		if _, ok := t.exited[scan[i].PID]; ok {
			shown[scan[i].PID] = scan[i].Start
		}
	}
	for pid, s := range t.exited {
		if o, ok := shown[pid]; !ok || !o.Same(s) {
			delete(t.exited, pid)
		}
	}
}
