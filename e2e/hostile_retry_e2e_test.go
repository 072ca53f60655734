package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// No kill is ever given up (issue 17): a process the daemon may not signal
// is retried, 1 s after the failure and then doubling, until it is gone.
//
// As root the daemon may signal anything, so these tests take that away
// for real: the daemon runs without CAP_KILL (dropped from its bounding
// and inheritable sets before exec, so an exec as root gets it back from
// nowhere), and its target runs as nobody. pidfd_send_signal then answers
// EPERM, as for a daemon in a container without CAP_KILL or a process in
// another user namespace. To become killable the target execs a setuid
// root copy of sleep: its saved UID becomes 0, the daemon's UID, and the
// kernel lets the signal through (kill_ok_by_cred) — the next retry kills
// it.

const nobody = 65534

// startDaemonNoKill runs the daemon as startDaemon does, without CAP_KILL
// (through the test binary as a wrapper: modes_test.go), and checks that
// it really has none.
func startDaemonNoKill(t *testing.T, args ...string) *testDaemon {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemonUnder(t, []string{self}, []string{dropCapsEnv + "=kill"}, args...)
	v := procStatus(d.cmd.Process.Pid, "CapEff")
	caps, err := strconv.ParseUint(v, 16, 64)
	if err != nil || caps&(1<<unix.CAP_KILL) != 0 || caps&(1<<unix.CAP_NET_ADMIN) == 0 {
		t.Fatalf("daemon capabilities %q (%v): want CAP_NET_ADMIN and no CAP_KILL", v, err)
	}
	return d
}

// retryBins makes, in a directory nobody can reach, name: a shell (a
// symlink to /bin/sh, so its comm is name) and setuid/name: a setuid root
// copy of sleep, under the same name so that an agent rule matches both.
func retryBins(t *testing.T, names ...string) (dir string) {
	t.Helper()
	dir = publicTempDir(t, "supervisor-retry-")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	body := readFile(t, sleep)
	if err := os.Mkdir(filepath.Join(dir, "setuid"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.Symlink("/bin/sh", filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "setuid", n)
		if err := os.WriteFile(p, body, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, 0o4755); err != nil { // os.Chmod would need os.ModeSetuid
			t.Fatal(err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID != 0 {
		t.Fatalf("%s is on a nosuid mount: the target could never become killable (set TMPDIR elsewhere)", dir)
	}
	return dir
}

// retryingEntry waits until /agents lists pid as retrying (its retry is
// queued between two attempts; an attempt in flight is not listed).
func (d *testDaemon) retryingEntry(t *testing.T, pid int) agentView {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for seen := 1; time.Now().Before(end); seen++ {
		for _, v := range d.agentsFor(t, pid) {
			if v.State == "retrying" {
				return v
			}
		}
		d.waitLogs(t, seen+1, time.Until(end), retryWarn(pid, ""))
	}
	t.Fatalf("pid %d never listed as retrying", pid)
	return agentView{}
}

func retriesMetric(t *testing.T, d *testDaemon, reason string) float64 {
	return metricValue(t, d, `supervisor_kill_retries_total{reason="`+reason+`"}`)
}

// An agent the daemon may not signal (EPERM) outlives its deadline: the
// kill is recorded failed, then retried with backoff — warned, counted,
// listed as retrying, and still killable by an operator ("supervisor kill"
// kills it now, not "already being killed") — until the process can be
// signalled, when the next attempt kills it and the retries stop.
func TestIntegrationRetryEPERMAgent(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 2 * time.Second
	sock := ctlSocket(t)
	d := startDaemonNoKill(t, "--max-age", age.String(), "--kill-grace", "1s", "--agent", "svretry", "--control-socket", sock)
	dir := retryBins(t, "svretry")

	// The agent: a shell as nobody, that execs the setuid sleep when the
	// test writes a line (and exits at EOF).
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wr.Close() })
	cmd := exec.Command(filepath.Join(dir, "svretry"), "-c", `read x && exec "$0" 600`, filepath.Join(dir, "setuid", "svretry"))
	cmd.Stdin = rd
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	proc := runAgent(t, cmd)
	rd.Close()
	pid := proc.pid

	// The first kill fails, and is not the last.
	failed := d.waitLog(t, age+30*time.Second, killRow(pid, "max_age", "failed"))
	if failed["attempt"] != nil || failed["final_signal"] != "TERM" {
		t.Errorf("first kill: %v", failed)
	}
	deadline := num(failed["deadline_boot_ns"])
	if deadline < num(failed["start_boot_ns"])+int64(age) {
		t.Errorf("deadline %d before start + max age", deadline)
	}
	w := d.waitLog(t, 10*time.Second, retryWarn(pid, "max_age"))
	if num(w["attempt"]) != 0 || num(w["next_attempt"]) != 1 || !strings.Contains(fmt.Sprint(w["error"]), "operation not permitted") {
		t.Errorf("first retry warning: %v", w)
	}
	if rp, _ := w["retry_pids"].([]any); len(rp) != 1 || int(rp[0].(float64)) != pid {
		t.Errorf("retry_pids %v, want [%d]", w["retry_pids"], pid)
	}
	if in, err := time.ParseDuration(fmt.Sprint(w["retry_in"])); err != nil || in > time.Second {
		t.Errorf("retry_in %v (%v): want the first backoff, at most 1 s", w["retry_in"], err)
	}

	v := d.retryingEntry(t, pid)
	if v.Reason != "max_age" || v.Attempt < 1 || v.NextAttempt == nil || v.Deadline.IsZero() {
		t.Errorf("/agents entry %+v: want max_age, an attempt and a next attempt", v)
	}
	if v.NextAttempt != nil && !v.NextAttempt.After(v.Deadline) {
		t.Errorf("next attempt %v not after the first deadline %v", v.NextAttempt, v.Deadline)
	}

	// Two retries queued, counted; the first retry's record keeps the
	// first deadline and reason, and says which attempt it is.
	d.waitLogs(t, 2, 30*time.Second, retryWarn(pid, "max_age"))
	// Counted when the failed attempt is recorded, which may come just
	// after the tracker's warning: wait for the count, bounded.
	waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, "max_age") >= 2 },
		"supervisor_kill_retries_total{reason=max_age} >= 2 after two retries")
	r1 := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return killRow(pid, "max_age", "")(m) && num(m["attempt"]) == 1 })
	if r1["outcome"] != "failed" || num(r1["deadline_boot_ns"]) != deadline {
		t.Errorf("first retry's record %v: want failed, deadline %d", r1, deadline)
	}
	if late := time.Duration(num(r1["lateness_ns"])); late < time.Second {
		t.Errorf("first retry's lateness %s: counted from the retry, not the deadline", late)
	}

	// An operator's kill takes effect now: a manual kill, not "already
	// being killed" (it fails too, and is retried as manual). Only while
	// an attempt is in flight (milliseconds, seconds apart) is it busy:
	// then the command is given again once that attempt is over.
	for i := 1; ; i++ {
		out := mustCtl(t, sock, "kill", strconv.Itoa(pid))
		if !strings.Contains(out, "already being killed") && strings.Contains(out, strconv.Itoa(pid)) {
			break
		}
		if i == 3 {
			t.Fatalf("supervisor kill of a retrying agent: %q", out)
		}
		d.waitLogs(t, len(d.findLogs(retryWarn(pid, "")))+1, 30*time.Second, retryWarn(pid, ""))
	}
	manual := d.waitLog(t, 30*time.Second, killRow(pid, "manual", "failed"))
	if manual["requested_by"] == nil || manual["attempt"] != nil {
		t.Errorf("manual kill record %v: want requested_by and a first attempt", manual)
	}
	d.waitLog(t, 10*time.Second, retryWarn(pid, "manual"))

	// Killable now: the next attempt kills it, and the retries stop.
	if _, err := io.WriteString(wr, "go\n"); err != nil {
		t.Fatal(err)
	}
	end := d.waitLog(t, 30*time.Second, func(m map[string]any) bool {
		return killRow(pid, "manual", "")(m) && m["outcome"] != "failed"
	})
	if end["outcome"] != "terminated" || num(end["attempt"]) < 1 || end["retry_pids"] != nil ||
		num(end["deadline_boot_ns"]) != num(manual["deadline_boot_ns"]) {
		t.Errorf("last record %v: want terminated by a retry of the manual kill, nothing retried", end)
	}
	if ws := proc.waitExit(t, 30*time.Second); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("agent ended %v, want SIGTERM", ws)
	}
	if as := d.agentsFor(t, pid); len(as) != 0 {
		t.Errorf("/agents still lists the dead agent: %+v", as)
	}
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Retrying != 0 {
		t.Errorf("kills_retrying %d after the process died", h.Retrying)
	}
	for _, reason := range []string{"max_age", "manual"} {
		want := len(d.findLogs(retryWarn(pid, reason)))
		waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, reason) == float64(want) },
			"retries{%s} = one per warning (%d)", reason, want)
	}
}

// The agent dies at its deadline but a member of its tree may not be
// signalled: the member is retried as a kill root of its own, with the
// agent's reason, session and deadline, until it is killed.
func TestIntegrationRetryEPERMMember(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age = 2 * time.Second
	d := startDaemonNoKill(t, "--max-age", age.String(), "--kill-grace", "1s", "--agent", "svtree", "--control-socket", "")
	dir := retryBins(t, "svtree", "svmember")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The agent, as root: starts the member through the test binary,
	// which becomes nobody and execs a shell that waits on fd 3, then
	// waits for it. The member execs the setuid sleep on a line.
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wr.Close() })
	script := execAsEnv + `=` + strconv.Itoa(nobody) + ` "$1" "$2" -c 'read x <&3 && exec "$0" 600' "$3" & echo "member $!"; wait`
	cmd := exec.Command(filepath.Join(dir, "svtree"), "-c", script, "svtree", self,
		filepath.Join(dir, "svmember"), filepath.Join(dir, "setuid", "svmember"))
	cmd.ExtraFiles = []*os.File{rd}
	proc := runAgent(t, cmd)
	rd.Close()

	agentRow := d.waitLog(t, age+30*time.Second, killRow(proc.pid, "max_age", "failed"))
	w := d.waitLog(t, 10*time.Second, retryWarn(proc.pid, "max_age"))
	rp, _ := w["retry_pids"].([]any)
	if len(rp) != 1 {
		t.Fatalf("retry warning %v: want the member alone retried", w)
	}
	member := int(rp[0].(float64))
	mfd := pinned(t, member)
	if said := proc.waitPID(t, "member", 10*time.Second); said != member {
		t.Errorf("retried pid %d is not the member (agent said %d)", member, said)
	}
	if desc, _ := agentRow["descendants"].([]any); len(desc) != 1 || int(desc[0].(float64)) != member {
		t.Errorf("agent's record: descendants %v, want [%d]", agentRow["descendants"], member)
	}
	proc.waitExit(t, 30*time.Second) // the agent itself died at its deadline
	deadline := num(agentRow["deadline_boot_ns"])

	r1 := d.waitLog(t, 30*time.Second, killRow(member, "max_age", "failed"))
	if num(r1["attempt"]) != 1 || num(r1["deadline_boot_ns"]) != deadline || num(r1["session_pid"]) != int64(proc.pid) {
		t.Errorf("member's first retry %v: want attempt 1, the agent's deadline %d and session", r1, deadline)
	}
	v := d.retryingEntry(t, member)
	if v.Reason != "max_age" || int(v.SessionPID) != proc.pid || v.NextAttempt == nil {
		t.Errorf("/agents entry of the member %+v", v)
	}
	d.waitLogs(t, 1, 30*time.Second, retryWarn(member, "max_age"))
	// Counted when the failed attempt is recorded, which may come just
	// after the tracker's warning: wait for the count, bounded.
	waitFor(t, 10*time.Second, func() bool { return retriesMetric(t, d, "max_age") >= 2 },
		"supervisor_kill_retries_total{reason=max_age} >= 2 after two retries")

	if _, err := io.WriteString(wr, "go\n"); err != nil {
		t.Fatal(err)
	}
	end := d.waitLog(t, 30*time.Second, func(m map[string]any) bool {
		return killRow(member, "max_age", "")(m) && m["outcome"] != "failed"
	})
	if end["outcome"] != "terminated" || num(end["attempt"]) < 2 || num(end["deadline_boot_ns"]) != deadline || end["retry_pids"] != nil {
		t.Errorf("member's last record %v: want terminated at a later attempt, the agent's deadline, nothing retried", end)
	}
	if !pidfdDead(mfd, 0) {
		t.Error("the member outlived its successful kill")
	}
	if as := d.agentsFor(t, member); len(as) != 0 {
		t.Errorf("/agents still lists the dead member: %+v", as)
	}
}
