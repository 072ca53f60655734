package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// Root extends an agent by 3 s: it dies at start + max age + 3 s, never
// before, by its own record of SIGTERM and by the daemon's.
func TestIntegrationControlExtend(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	const age, ext = 3 * time.Second, 3 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--control-socket", sock)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket %v %v: want a socket, mode 0600", fi, err)
	}
	if fi, _ := os.Stat(filepath.Dir(sock)); fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v, want 0700", fi.Mode().Perm())
	}
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	out := mustCtl(t, sock, "extend", strconv.Itoa(a.pid), ext.String())
	if !strings.Contains(out, fmt.Sprintf("pid %d (claude): deadline", a.pid)) {
		t.Errorf("extend said %q", out)
	}
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft < 3 {
		t.Errorf("/agents after extend: %+v", v)
	}
	m := d.waitLog(t, age+ext+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age+ext)
	if tt := a.termTime(t); tt < a.t0+int64(age+ext) {
		t.Errorf("SIGTERM %s after start, before max age + extend %s", time.Duration(tt-a.t0), age+ext)
	}
	if m["reason"] != "max_age" {
		t.Errorf("reason %v, want max_age", m["reason"])
	}
	logged := d.findLogs(func(m map[string]any) bool { return m["msg"] == "control command" && m["cmd"] == "extend" })
	if len(logged) != 1 || num(logged[0]["uid"]) != 0 || num(logged[0]["caller_pid"]) == 0 {
		t.Errorf("command log lines %v: want one with the caller's uid and pid", logged)
	}

	// Usage errors exit 2; a PID the daemon does not know, 1.
	for _, args := range [][]string{{"extend", "12"}, {"extend", "x", "1h"}, {"extend", "12", "-1h"}, {"extend", "12", "1h", "--until", "10:00"},
		{"kill", "12", "--until", "10:00"}, {"keep"}, {"reload", "3"}} {
		if _, errs, code := ctl(t, sock, args...); code != 2 || !strings.Contains(errs, "usage") {
			t.Errorf("%v: exit %d %q, want 2 with the usage", args, code, errs)
		}
	}
	if _, errs, code := ctl(t, sock, "extend", strconv.Itoa(a.pid), "1h"); code != 1 || !strings.Contains(errs, "no such process") {
		t.Errorf("extend of an exited agent: exit %d %q", code, errs)
	}
	// No daemon: exit 1, saying so.
	d.stop(t)
	if _, err := os.Lstat(sock); err == nil {
		t.Error("socket file left after the daemon stopped")
	}
	if _, errs, code := ctl(t, sock, "reload"); code != 1 || !strings.Contains(errs, "no daemon answers on "+sock) {
		t.Errorf("without a daemon: exit %d %q", code, errs)
	}
}

// Extends survive a SIGHUP that changes max age (deadline = start + the new
// max age + the extends) and a daemon restart; `supervisor reload` does
// what SIGHUP does and prints the result.
func TestIntegrationControlExtendSurvives(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	state := t.TempDir()
	conf := newConf(t, "REAPER_MAX_AGE=2s")
	args := []string{"--config", conf, "--control-socket", sock, "--state-dir", state}
	d := startDaemon(t, args...)
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	mustCtl(t, sock, "extend", strconv.Itoa(a.pid), "2s")
	mustCtl(t, sock, "extend", strconv.Itoa(a.pid), "2s") // extends add up: +4s

	// A reload to max age 4s: the deadline is start + 4s + 4s.
	writeConf(t, conf, "REAPER_MAX_AGE=4s")
	d.reload(t)
	const total = 8 * time.Second
	v := d.waitTracked(t, a.pid)
	if got := v.Deadline.Sub(v.StartedAt); got < total || got > total+time.Second {
		t.Fatalf("after a reload the deadline is start + %s, want start + 4s max age + 4s of extends", got)
	}
	// `supervisor reload`: a bad file is refused with its error, the old
	// configuration stays; a good one is ok.
	writeConf(t, conf, "REAPER_MAX_AGE=soon")
	if _, errs, code := ctl(t, sock, "reload"); code != 1 || !strings.Contains(errs, "REAPER_MAX_AGE") {
		t.Errorf("reload of a bad file: exit %d %q, want 1 naming the variable", code, errs)
	}
	writeConf(t, conf, "REAPER_MAX_AGE=4s")
	if out := mustCtl(t, sock, "reload"); strings.TrimSpace(out) != "ok" {
		t.Errorf("reload printed %q, want ok", out)
	}

	// A restart on the same state dir: the lease is restored before the
	// start-up scan queues the agent.
	d.stop(t)
	d2 := startDaemon(t, args...)
	v = d2.waitTracked(t, a.pid)
	if got := v.Deadline.Sub(v.StartedAt); got < total || got > total+time.Second {
		t.Fatalf("after a restart the deadline is start + %s, want start + %s", got, total)
	}
	m := d2.waitLog(t, total+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, total)
	if tt := a.termTime(t); tt < a.t0+int64(total) {
		t.Errorf("SIGTERM %s after start, before %s", time.Duration(tt-a.t0), total)
	}
	// The lease ended with the process: a new process is not extended.
	d2.stop(t)
	d3 := startDaemon(t, args...)
	d3.noLogs(t, func(m map[string]any) bool { return m["msg"] == "leases restored" }, "leases of an exited process restored")
}

// `supervisor kill` reaps an agent's session within its kill grace through
// the normal protocol; the record says reason manual and who asked.
func TestIntegrationControlKill(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	state := t.TempDir()
	const grace = time.Second
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", grace.String(), "--control-socket", sock, "--state-dir", state)
	a := startAgent(t, "claude", "-children", "2", "-child-ignore-term")
	d.waitTracked(t, a.pid)
	var children []int
	for len(children) < 2 {
		l := a.waitLine(t, "pid ", 10*time.Second)
		if pid, _ := strconv.Atoi(strings.TrimPrefix(l, "pid ")); pid != a.pid {
			children = append(children, pid)
			pinned(t, pid)
		}
	}
	// Asked about a child: the whole session goes.
	t0 := boottime()
	out := mustCtl(t, sock, "kill", strconv.Itoa(children[0]))
	if !strings.Contains(out, fmt.Sprintf("session of agent %d", a.pid)) || !strings.Contains(out, "reason manual") {
		t.Errorf("kill said %q", out)
	}
	m := d.waitLog(t, 20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	if late := time.Duration(a.exited - t0); late > grace+2*time.Second {
		t.Errorf("agent gone %s after the kill command, want within the kill grace %s (+2s)", late, grace)
	}
	const by = "uid 0 pid "
	if m["reason"] != "manual" || !strings.HasPrefix(fmt.Sprint(m["requested_by"]), by) || m["outcome"] != "killed" {
		t.Errorf("kill line %v: want reason manual, requested_by uid 0, outcome killed (the children ignore TERM)", m)
	}
	if desc := fmt.Sprint(m["descendants"]); !strings.Contains(desc, strconv.Itoa(children[0])) || !strings.Contains(desc, strconv.Itoa(children[1])) {
		t.Errorf("descendants %v, want both children", desc)
	}
	d.stop(t)
	recs := killRecords(t, state, a.pid)
	if len(recs) == 0 {
		t.Fatal("no kill row spooled")
	}
	k := recs[len(recs)-1].Kill
	if k.Reason != "manual" || !strings.HasPrefix(k.RequestedBy, by) || k.Outcome != "killed" {
		t.Errorf("kill row %+v: want reason manual, requested_by, outcome killed", k)
	}
	// The caller's pid in requested_by is the client process's.
	if !strings.Contains(fmt.Sprint(d.findLogs(func(m map[string]any) bool { return m["msg"] == "control command" })), "kill") {
		t.Error("the kill command is not logged")
	}
}

// The row reaches PostgreSQL with requested_by (migration 003).
func TestIntegrationControlKillDatabase(t *testing.T) {
	if ranApart(t) {
		return
	}
	dsn := testDatabase(t)
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--control-socket", sock, "--database-url", dsn)
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	mustCtl(t, sock, "kill", strconv.Itoa(a.pid))
	a.waitExit(t, 10*time.Second)
	conn := dbConn(t, dsn)
	waitCount(t, conn, 20*time.Second, 1,
		"SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND reason = 'manual' AND requested_by LIKE 'uid 0 pid %' AND outcome <> 'pending'", a.pid)
}

// A caller that is neither root nor in the control group is refused by the
// peer-credential check, even when the socket's mode lets it connect.
func TestIntegrationControlRefused(t *testing.T) {
	if ranApart(t) {
		return
	}
	// Let nobody reach the socket and run the binary: every directory on
	// the way traversable, the socket 0666. Only the peer check is left.
	base := t.TempDir()
	dir := filepath.Join(base, "run")
	os.Mkdir(dir, 0o755)
	for _, p := range []string{filepath.Dir(base), base, filepath.Dir(supervisorBin)} {
		os.Chmod(p, 0o755)
	}
	sock := filepath.Join(dir, "control.sock")
	d := startDaemon(t, "--max-age", "1h", "--control-socket", sock)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	for _, args := range [][]string{{"kill", strconv.Itoa(a.pid)}, {"keep", strconv.Itoa(a.pid)}, {"reload"}} {
		out, errs, code := runCLIAs(t, []string{"-u", "nobody"}, append(args, "--control-socket", sock)...)
		if code != 1 || !strings.Contains(errs, "permission denied: the control socket is for root") || !strings.Contains(errs, "uid 65534") {
			t.Errorf("nobody %v: exit %d, stdout %q stderr %q; want exit 1, refused by the peer check", args, code, out, errs)
		}
	}
	// Each connection refused (logged before the answer): none ran.
	for _, refused := range d.waitLogs(t, 3, 10*time.Second, msgStarts("control: connection refused")) {
		if num(refused["uid"]) != 65534 || num(refused["pid"]) == 0 {
			t.Errorf("refusal logged as %v: want uid 65534 and the caller's pid", refused)
		}
	}
	d.noLogs(t, func(m map[string]any) bool { return m["msg"] == "control command" }, "a refused caller's command ran")
	if !a.alive() {
		t.Fatal("the agent died: a refused kill went through")
	}
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft < 3000 {
		t.Errorf("agent after refused commands: %+v", v)
	}

	// A member of --control-group passes: nobody with the group "users"
	// as a supplementary group only (SO_PEERGROUPS), the socket 0660 in
	// that group.
	d.stop(t)
	d = startDaemon(t, "--max-age", "1h", "--control-socket", sock, "--control-group", "users")
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket with a control group: %v %v, want mode 0660", fi, err)
	}
	if out, errs, code := runCLIAs(t, []string{"-u", "nobody", "-g", "nogroup", "-G", "users"}, "reload", "--control-socket", sock); code != 0 || strings.TrimSpace(out+errs) != "ok" {
		t.Errorf("a member of the control group: exit %d %q %q, want ok", code, out, errs)
	}
	logged := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "control command" })
	if num(logged["uid"]) != 65534 {
		t.Errorf("command logged as %v, want uid 65534", logged)
	}
}

// `kill` of a process that is neither an agent nor a session member needs
// --force; protected processes are refused even then.
func TestIntegrationControlKillForce(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--control-socket", sock)
	name := testutil.RandName("idle")
	other := startAgent(t, name) // runs as a plain process: no rule matches it
	other.waitLine(t, "pid ", 10*time.Second)
	if _, errs, code := ctl(t, sock, "kill", strconv.Itoa(other.pid)); code != 1 || !strings.Contains(errs, "--force") {
		t.Errorf("kill of a non-agent: exit %d %q, want 1 asking for --force", code, errs)
	}
	if !other.alive() {
		t.Fatal("killed without --force")
	}
	for _, pid := range []int{1, d.cmd.Process.Pid, os.Getpid()} {
		if _, errs, code := ctl(t, sock, "kill", strconv.Itoa(pid), "--force"); code != 1 || !strings.Contains(errs, "protected") {
			t.Errorf("kill --force %d: exit %d %q, want refused as protected", pid, code, errs)
		}
	}
	mustCtl(t, sock, "kill", "--force", strconv.Itoa(other.pid))
	m := d.waitLog(t, 20*time.Second, killOf(other.pid))
	other.waitExit(t, 10*time.Second)
	if m["reason"] != "manual" || m["session_pid"] != nil {
		t.Errorf("forced kill %v: want reason manual, no session", m)
	}
}

// `keep` exempts an agent (never signalled past its deadline) and a
// leftover (its queued kill taken back); `unkeep` makes each a candidate
// again.
func TestIntegrationControlKeep(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	state := t.TempDir()
	const age, lgrace = 3 * time.Second, 2 * time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s", "--leftover-grace", lgrace.String(),
		"--control-socket", sock, "--state-dir", state)

	// An agent kept before its deadline is never signalled.
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	out := mustCtl(t, sock, "keep", strconv.Itoa(a.pid))
	if !strings.Contains(out, "kept") || !strings.Contains(out, strconv.Itoa(a.pid)) {
		t.Errorf("keep said %q", out)
	}
	if v := d.agentsFor(t, a.pid); len(v) != 0 {
		t.Errorf("kept agent still listed with a deadline: %+v", v)
	}

	// A leftover: an agent whose child outlives it; the child is queued,
	// then kept.
	b := startAgent(t, "claude", "-children", "1", "-exit-after", "1s")
	d.waitTracked(t, b.pid)
	var child int
	for child == 0 {
		l := b.waitLine(t, "pid ", 10*time.Second)
		if pid, _ := strconv.Atoi(strings.TrimPrefix(l, "pid ")); pid != b.pid {
			child = pid
		}
	}
	cfd := pinned(t, child)
	b.waitExit(t, 10*time.Second)
	queued := d.waitLog(t, 10*time.Second, leftoverOf(child))
	out = mustCtl(t, sock, "keep", strconv.Itoa(child))
	if !strings.Contains(out, "kills taken back: "+strconv.Itoa(child)) {
		t.Errorf("keep of a queued leftover said %q", out)
	}

	// Past both deadlines by a margin: neither was signalled. (Nothing
	// announces that nothing happened: a window.)
	sleepUntil(max(a.t0+int64(age), num(queued["deadline_boot_ns"])) + int64(2*time.Second))
	if !a.alive() || pidfdDead(cfd, 0) {
		t.Fatalf("a kept process died: agent alive %v, leftover alive %v", a.alive(), !pidfdDead(cfd, 0))
	}
	if _, signalled := a.termAt(); signalled {
		t.Error("the kept agent got SIGTERM")
	}
	if n := d.findLogs(func(m map[string]any) bool {
		return m["msg"] == "kill" && (num(m["pid"]) == int64(a.pid) || num(m["pid"]) == int64(child))
	}); len(n) != 0 {
		t.Errorf("kept processes killed: %v", n)
	}

	// The keeps survive a restart.
	d.stop(t)
	d = startDaemon(t, "--max-age", age.String(), "--kill-grace", "1s", "--leftover-grace", lgrace.String(),
		"--control-socket", sock, "--state-dir", state)
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "leases restored" })
	time.Sleep(time.Second) // a window for the start-up scan's kill, had the keep been lost
	if v := d.agentsFor(t, a.pid); len(v) != 0 || !a.alive() {
		t.Fatalf("after a restart the kept agent is queued (%+v) or dead (alive %v)", v, a.alive())
	}

	// unkeep: both past their time, both go now.
	mustCtl(t, sock, "unkeep", strconv.Itoa(child))
	mustCtl(t, sock, "unkeep", strconv.Itoa(a.pid))
	m := d.waitLog(t, 20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	if tt := a.termTime(t); m["reason"] != "max_age" || tt < a.t0+int64(age) {
		t.Errorf("unkept agent: kill %v, SIGTERM %s after start", m, time.Duration(tt-a.t0))
	}
	lm := d.waitLog(t, 20*time.Second, killOf(child))
	if lm["reason"] != "leftover" && lm["reason"] != "max_age" {
		t.Errorf("unkept leftover killed for %v", lm["reason"])
	}
}
