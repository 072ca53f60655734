package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// What the tests look for in a daemon's log, and what they assert about a
// kill it records.

const (
	// maxAge is the tests' usual --max-age: short, and long enough for a
	// race-detector build of the daemon to track an agent before it.
	maxAge = 2 * time.Second
	// leftoverGrace and leftKillGrace are the session tests'
	// --leftover-grace and --kill-grace.
	leftoverGrace = 3 * time.Second
	leftKillGrace = time.Second
	// exitSlack bounds how much later than the agent's parent the daemon
	// may date the agent's exit: do_exit (kernel/exit.c) calls
	// exit_notify, which wakes the parent's wait, before
	// proc_exit_connector stamps the exit event.
	exitSlack = 100 * time.Millisecond
)

// num is a JSON number as an integer.
func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// Log lines by their text: the message containing s (msgHas) or
// starting with it (msgStarts), a warning's message (warnHas,
// warnStarts), or s anywhere in the line, a field's value included
// (lineHas).
func msgHas(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m["msg"]), s) }
}

func msgStarts(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return strings.HasPrefix(fmt.Sprint(m["msg"]), s) }
}

func warnHas(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["level"] == "warn" && msgHas(s)(m) }
}

func warnStarts(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["level"] == "warn" && msgStarts(s)(m) }
}

// warnedOnce asserts exactly one line of d's log matches match: one
// warning per cause, not one per row or per attempt. what names them.
func warnedOnce(t testing.TB, d *testDaemon, what string, match func(map[string]any) bool) {
	t.Helper()
	if n := len(d.findLogs(match)); n != 1 {
		t.Errorf("%d %s, want exactly 1 (one per cause)", n, what)
	}
}

func lineHas(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m), s) }
}

// killOf matches the kill line (or dry-run line) of pid's tree.
func killOf(pid int) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return (m["msg"] == "kill" || m["msg"] == "would kill") && num(m["pid"]) == int64(pid)
	}
}

// killRow matches pid's kill line for reason, with outcome unless that is
// "".
func killRow(pid int, reason, outcome string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return killOf(pid)(m) && m["reason"] == reason && (outcome == "" || m["outcome"] == outcome)
	}
}

// leftoverKillOf matches the kill line (or dry-run line) for pid.
func leftoverKillOf(pid int) func(map[string]any) bool {
	return func(m map[string]any) bool {
		switch m["msg"] {
		case "kill", "would kill", "would kill leftover":
			return num(m["pid"]) == int64(pid)
		}
		return false
	}
}

// leftoverOf matches the debug line of pid queued as a leftover.
func leftoverOf(pid int) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["msg"] == "leftover" && num(m["pid"]) == int64(pid) }
}

// leftoverOrKillOf matches either line of pid as a leftover: queued
// (leftoverOf) or killed (leftoverKillOf).
func leftoverOrKillOf(pid int) func(map[string]any) bool {
	return func(m map[string]any) bool { return leftoverOf(pid)(m) || leftoverKillOf(pid)(m) }
}

// dissolvedOf matches the line of the session of pid dissolved for cause.
func dissolvedOf(pid int, cause string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "session dissolved") && num(m["session_pid"]) == int64(pid) && m["cause"] == cause
	}
}

// retryWarn matches the warning that pid's kill failed and is retried,
// for reason unless that is "".
func retryWarn(pid int, reason string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["msg"] == "kill failed: retrying" && m["level"] == "warn" && num(m["pid"]) == int64(pid) &&
			(reason == "" || m["reason"] == reason)
	}
}

// checkKill asserts the daemon's record of a kill and the agent's own
// experience: never early, not absurdly late.
func checkKill(t testing.TB, m map[string]any, a *agent, maxAge time.Duration) {
	t.Helper()
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if signalled < deadline {
		t.Errorf("pid %d signalled %v before its deadline", a.pid, time.Duration(deadline-signalled))
	}
	if deadline < start+int64(maxAge) {
		t.Errorf("pid %d: deadline %d earlier than start %d + max age", a.pid, deadline, start)
	}
	if start < a.t0-int64(time.Millisecond) && m["start_exact"] == true {
		t.Errorf("pid %d: exact start %d before the test forked it at %d", a.pid, start, a.t0)
	}
	if late := time.Duration(signalled - deadline); late > time.Second {
		t.Errorf("pid %d signalled %s after its deadline", a.pid, late)
	}
	// The agent's own view: it must not have been signalled or have died
	// before max age had passed since the test started it.
	if tt, ok := a.termAt(); ok && tt < a.t0+int64(maxAge) {
		t.Errorf("pid %d got SIGTERM %s after it was started, before max age %s", a.pid, time.Duration(tt-a.t0), maxAge)
	}
	select {
	case <-a.done:
		if a.exited < a.t0+int64(maxAge) {
			t.Errorf("pid %d died %s after start, before max age %s", a.pid, time.Duration(a.exited-a.t0), maxAge)
		}
	default:
	}
}

// leftoverKilled lets the agent a exit (triggering exitFile), waits for
// the kill line of its leftover pid and checks it (checkLeftoverKill, within
// a second of its deadline). It returns the line, when the exit was
// triggered and when the leftover was signalled.
func leftoverKilled(t testing.TB, d *testDaemon, r rig, a *agent, exitFile string, pid int, grace, slack time.Duration) (m map[string]any, exitReq, sig int64) {
	t.Helper()
	exitReq = r.trigger(t, exitFile)
	a.waitExit(t, 10*time.Second)
	m = d.waitLog(t, grace+30*time.Second, leftoverKillOf(pid))
	return m, exitReq, checkLeftoverKill(t, m, a, exitReq, grace, slack, time.Second)
}

// checkLeftoverKill asserts the kill line m of a leftover of agent a: reason
// leftover, its session, and signalled never before exitReq (when the test
// let the agent exit: a lower bound of its exit) + grace, nor more than late
// after the deadline. The deadline is no later than the agent's exit as its
// parent saw it + grace + slack. It returns the signal time.
func checkLeftoverKill(t testing.TB, m map[string]any, a *agent, exitReq int64, grace, slack, late time.Duration) int64 {
	t.Helper()
	pid := num(m["pid"])
	if m["reason"] != "leftover" {
		t.Errorf("leftover %d: reason %v, want leftover", pid, m["reason"])
	}
	if num(m["session_pid"]) != int64(a.pid) {
		t.Errorf("leftover %d: session_pid %v, want the agent %d", pid, m["session_pid"], a.pid)
	}
	deadline, signalled := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"])
	if deadline < exitReq+int64(grace) {
		t.Errorf("leftover %d: deadline %s before the agent's exit + grace", pid, time.Duration(exitReq+int64(grace)-deadline))
	}
	if deadline > a.exited+int64(grace+slack) {
		t.Errorf("leftover %d: deadline %s after the agent's exit (as its parent saw it) + grace", pid, time.Duration(deadline-a.exited-int64(grace)))
	}
	if signalled < deadline || signalled < exitReq+int64(grace) {
		t.Errorf("leftover %d signalled early: %s before its deadline, %s after the agent was let exit (grace %s)",
			pid, time.Duration(deadline-signalled), time.Duration(signalled-exitReq), grace)
	}
	if l := time.Duration(signalled - deadline); l > late {
		t.Errorf("leftover %d signalled %s after its deadline", pid, l)
	}
	return signalled
}
