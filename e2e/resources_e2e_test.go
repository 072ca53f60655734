package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitSamples waits for n more resource samples than the daemon took so far.
func (d *testDaemon) waitSamples(t *testing.T, n int) {
	t.Helper()
	isSample := func(m map[string]any) bool { return m["msg"] == "resource sample" }
	want := len(d.findLogs(isSample)) + n
	seen := map[any]bool{}
	d.waitLog(t, 60*time.Second, func(m map[string]any) bool {
		if isSample(m) {
			seen[m["time"]] = true
		}
		return len(seen) >= want
	})
}

func waitGone(t *testing.T, a *agent, d *testDaemon, timeout time.Duration) map[string]any {
	t.Helper()
	m := d.waitLog(t, timeout, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	return m
}

// A session of two children holding 150 MB each is killed under a 200 MiB
// limit, with its figures in the kill row; a 60 MB session is not.
// Processes root keeps (--keep) do not count: a session whose kept child
// holds 150 MB and
// whose other child holds 10 MB is under the limit (each fake agent, a
// test binary, has tens of MB of its own: the whole session is well over
// 200 MiB), and a session whose
// agent is kept (250 MB) is exempt — both shown in /agents, by session.
func TestIntegrationResourceMemory(t *testing.T) {
	if ranApart(t) {
		return
	}
	dsn := testDatabase(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", "200ms",
		"--session-max-memory", "200MiB", "--keep", "claude:label=kept", "--keep", "exe:-label heldkept", "--database-url", dsn)
	in := "-cgroup-procs=" + filepath.Join(pidsCgroup(t, 1000), "cgroup.procs") // cleaned up with what is left
	mixed := startAgent(t, "claude", in, "-spawn", "label=heldkept,hold-mb=150", "-spawn", "label=mm,hold-mb=10")
	exempt := startAgent(t, "claude", in, "-spawn", "label=kept,hold-mb=250")
	for range 2 {
		mixed.waitLine(t, "held", 30*time.Second)
	}
	exempt.waitLine(t, "held", 30*time.Second)
	big := startAgent(t, "claude", in, "-spawn", "label=a,hold-mb=150", "-spawn", "label=b,hold-mb=150")
	small := startAgent(t, "claude", in, "-spawn", "label=c,hold-mb=60")
	small.waitLine(t, "held", 30*time.Second)
	m := waitGone(t, big, d, 60*time.Second)
	if m["reason"] != "memory" || num(m["memory_bytes"]) <= 200<<20 || num(m["procs"]) != 3 {
		t.Errorf("kill: %v; want reason memory, memory_bytes > 200 MiB, procs 3", m)
	}
	// The others survive several samples after the big one died.
	d.waitSamples(t, 5)
	for _, a := range []struct {
		a    *agent
		what string
	}{{small, "the 60 MB session"}, {mixed, "the session of 10 MB + a kept 150 MB"}, {exempt, "the kept 250 MB session"}} {
		if !a.a.alive() {
			t.Errorf("%s was killed under a 200 MiB limit", a.what)
		}
	}
	var agents []agentView
	d.get(t, "/agents", &agents)
	seen := map[int]bool{}
	for _, v := range agents {
		f := v.SessionFigures
		switch int(v.PID) {
		case small.pid:
			if f == nil || f.MemoryBytes < 55<<20 || f.Procs != 2 {
				t.Errorf("/agents for the small session: %+v", v)
			}
		case mixed.pid:
			if f == nil || f.MemoryBytes < 10<<20 || f.MemoryBytes > 200<<20 || f.Procs != 2 || f.KeptProcs != 1 ||
				f.KeptMemoryBytes < 145<<20 || f.Exempt {
				t.Errorf("/agents for the session with a kept child: %+v %+v", v, f)
			}
		case exempt.pid:
			if f == nil || !f.Exempt || f.Procs != 0 || f.KeptProcs != 2 || f.KeptMemoryBytes < 245<<20 || v.Reason != "" {
				t.Errorf("/agents for the exempt session: %+v %+v", v, f)
			}
		default:
			continue
		}
		seen[int(v.PID)] = true
	}
	if len(seen) != 3 {
		t.Errorf("/agents lacks sessions (%v of %d, %d, %d): %+v", seen, small.pid, mixed.pid, exempt.pid, agents)
	}
	conn := dbConn(t, dsn)
	waitCount(t, conn, 30*time.Second, 1, `SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND reason = 'memory'
		AND outcome <> 'pending' AND memory_bytes > 209715200 AND procs = 3 AND (details->>'limit')::float8 = 209715200`, big.pid)
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM tel.agent_kills WHERE session_pid = ANY($1)`,
		[]int32{int32(small.pid), int32(mixed.pid), int32(exempt.pid)}).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d kill rows for the sessions under the limit (%v)", n, err)
	}
}

// A session forking 80 sleepers is killed under a limit of 50; one with 10
// is not.
func TestIntegrationResourceProcs(t *testing.T) {
	if ranApart(t) {
		return
	}
	dsn := testDatabase(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", "200ms",
		"--session-max-procs", "50", "--database-url", dsn)
	in := "-cgroup-procs=" + filepath.Join(pidsCgroup(t, 1000), "cgroup.procs")
	small := startAgent(t, "claude", in, "-sleepers", "10")
	small.waitLine(t, "sleepers", 30*time.Second)
	big := startAgent(t, "claude", in, "-sleepers", "80")
	m := waitGone(t, big, d, 60*time.Second)
	if m["reason"] != "procs" || num(m["procs"]) <= 50 {
		t.Errorf("kill: %v; want reason procs, procs > 50", m)
	}
	d.waitSamples(t, 5)
	if !small.alive() {
		t.Fatal("the session of 11 was killed under a limit of 50")
	}
	conn := dbConn(t, dsn)
	waitCount(t, conn, 30*time.Second, 1, `SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND reason = 'procs'
		AND outcome <> 'pending' AND procs > 50`, big.pid)
}

// An idle session is killed after --session-idle, never before: the quiet
// agent burns CPU for a second at a known moment, after which it and its
// child never run again, and its kill's first signal must come at least
// --session-idle after that burst's end (an implementation that counts
// idleness from the agent's start or from its first sample fails here). A
// busy session survives, and so does one that goes quiet and resumes
// before --session-idle, again and again.
func TestIntegrationResourceIdle(t *testing.T) {
	if ranApart(t) {
		return
	}
	const idle = 3 * time.Second
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", "200ms",
		"--session-idle", idle.String())
	in := "-cgroup-procs=" + filepath.Join(pidsCgroup(t, 1000), "cgroup.procs")
	busy := startAgent(t, "claude", in, "-spin")
	busy.waitLine(t, "spinning", 30*time.Second)
	pulse := startAgent(t, "claude", in, "-pulse", "1s")
	pulse.waitLine(t, "pulsing", 30*time.Second)
	quiet := startAgent(t, "claude", in, "-spawn", "label=child", "-busy-after", "2s", "-busy-for", "1s")
	line := quiet.waitLine(t, "burst-end", 30*time.Second)
	burstEnd, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	m := waitGone(t, quiet, d, 60*time.Second)
	if m["reason"] != "idle" {
		t.Fatalf("kill: %v; want reason idle", m)
	}
	signalled := num(m["signalled_boot_ns"])
	if after := time.Duration(signalled - burstEnd); after < idle {
		t.Errorf("idle kill %s after the agent's last CPU use, before --session-idle %s", after, idle)
	} else {
		t.Logf("idle kill %s after the last CPU use (--session-idle %s, --resource-interval 200ms)", after, idle)
	}
	details, _ := m["details"].(map[string]any)
	if s, _ := details["idle_seconds"].(float64); s < idle.Seconds() {
		t.Errorf("kill details %v: idle_seconds below the limit", details)
	}
	if !busy.alive() {
		t.Fatal("the busy session was killed for idleness")
	}
	if !pulse.alive() {
		t.Fatal("a session using CPU every second was killed for idleness under --session-idle 3s")
	}
}

// A session that keeps forking ends empty under --session-max-procs: the
// fork that crosses the limit queues the kill, and the tree kill chases
// every fork after it. The bomb is bounded by a pids cgroup (pids.max),
// so a failing test cannot take the box, and cleaned up through pidfds.
func TestIntegrationResourceForkBomb(t *testing.T) {
	if ranApart(t) {
		return
	}
	cg := pidsCgroup(t, 400)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "500ms", "--resource-interval", "1s",
		"--session-max-procs", "50")
	bomb := startAgent(t, "claude", "-ignore-term", "-cgroup-procs", filepath.Join(cg, "cgroup.procs"), "-bomb")
	m := waitGone(t, bomb, d, 60*time.Second)
	if m["reason"] != "procs" {
		t.Errorf("kill: %v; want reason procs", m)
	}
	if o := m["outcome"]; o != "killed" && o != "terminated" {
		t.Errorf("outcome %v", o)
	}
	// Empty: nothing of the bomb is left in its cgroup.
	var procs []int
	waitFor(t, 20*time.Second, func() bool {
		procs = cgroupProcs(t, cg)
		return len(procs) == 0
	}, "the bomb's cgroup empty after its kill: %v left", &procs)
}
