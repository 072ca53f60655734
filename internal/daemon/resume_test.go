package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/reap"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

func TestKillIDs(t *testing.T) {
	tick := 500 * tracker.Tick
	stat := func(pid int32) (tracker.ProcInfo, error) {
		if pid == 7 {
			return tracker.ProcInfo{PID: 7, Start: tracker.Start{NS: tick}}, nil
		}
		return tracker.ProcInfo{}, errors.New("gone")
	}
	k := &killIDs{host: "h", boot: "b", stat: stat}
	scanned := reap.Result{PID: 7, Start: tracker.Start{NS: tick}, Reason: tracker.ReasonMaxAge, Deadline: tick + 10}
	// The same kill seen by a daemon that had the fork event: its exact
	// start lies in the same tick.
	forked := scanned
	forked.Start = tracker.Start{NS: tick + 3*int64(time.Millisecond), Exact: true}
	forked.Deadline = tick + 99
	if a, b := k.of(scanned), k.of(forked); a != b {
		t.Errorf("one kill, two ids: %s %s", a, b)
	}
	if id := k.of(scanned); len(id) != 36 || id[14] != '8' {
		t.Errorf("id %q is not a version 8 UUID", id)
	}
	differ := func(what string, r reap.Result, kk *killIDs) {
		t.Helper()
		if kk.of(r) == k.of(scanned) {
			t.Errorf("%s: the same id", what)
		}
	}
	r := scanned
	r.Attempt = 1
	differ("another attempt", r, k)
	r = scanned
	r.Reason = tracker.ReasonLeftover
	differ("another reason", r, k)
	differ("another host", scanned, &killIDs{host: "g", boot: "b", stat: stat})
	differ("another boot", scanned, &killIDs{host: "h", boot: "c", stat: stat})
	// Decided at an instant: the deadline is part of the kill.
	m1 := scanned
	m1.Reason = tracker.ReasonManual
	m2 := m1
	m2.Deadline++
	if k.of(m1) == k.of(m2) {
		t.Error("two manual kills of one process share an id")
	}
	// No tick to key on, a dry run, no boot id: random ids.
	gone := forked
	gone.PID = 8
	dry := scanned
	dry.DryRun = true
	for what, r := range map[string]reap.Result{"gone": gone, "dry run": dry} {
		if k.of(r) == k.of(r) {
			t.Errorf("%s: the same id twice", what)
		}
	}
	if nb := (&killIDs{host: "h", stat: stat}); nb.of(scanned) == nb.of(scanned) {
		t.Error("no boot id: the same id twice")
	}
	// A kill that failed: its process lives on, and a later kill of it
	// with the same key is another row.
	first := k.of(scanned)
	k.spend(first)
	if again := k.of(scanned); again == first {
		t.Error("a spent id given again")
	}
}
