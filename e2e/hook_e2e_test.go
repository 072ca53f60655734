package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The --on-kill hook with the real daemon (scoped --under the test process,
// as startDaemon does): real agents killed, a real shell run per kill.

// recordingHook writes each run's stdin, environment and open descriptors
// to DIR/stdin.PID, DIR/env.PID and DIR/fds.PID, PID being the killed
// process's. The descriptors are listed by a child shell: the hook's own
// holds a close-on-exec copy of stdout while it redirects (dash).
func recordingHook(dir string) string {
	return fmt.Sprintf(`cat > %[1]s/stdin.$REAPER_EVENT_PID.tmp; env > %[1]s/env.$REAPER_EVENT_PID; sh -c 'ls /proc/$$/fd' > %[1]s/fds.$REAPER_EVENT_PID; `+
		`mv %[1]s/stdin.$REAPER_EVENT_PID.tmp %[1]s/stdin.$REAPER_EVENT_PID`, dir)
}

// waitFile waits for path to exist and returns its content.
func waitFile(t *testing.T, path string, timeout time.Duration) []byte {
	t.Helper()
	var b []byte
	waitFor(t, timeout, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	}, "%s written", path)
	return b
}

func hookLog(msg string, pid int) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["msg"] == msg && num(m["pid"]) == int64(pid) }
}

// TestIntegrationHookEveryKill: each of 3 agents' kills runs the hook once,
// with the kill record (the tel.agent_kills row: compared with the row in
// PostgreSQL when there is one) on stdin and the REAPER_EVENT_* variables,
// and nothing of the daemon's environment: not DATABASE_URL.
func TestIntegrationHookEveryKill(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	env := []string{"HOOK_TEST_SECRET=hunter2"}
	db := ""
	if os.Getenv("TEST_DATABASE_URL") != "" {
		db = testDatabase(t)
		env = append(env, "DATABASE_URL="+db)
	}
	d := startDaemonUnder(t, nil, env, "--max-age", maxAge.String(), "--kill-grace", "1s", "--host-id", "hooked",
		"--on-kill", recordingHook(dir))
	var agents []*agent
	for range 3 {
		agents = append(agents, startAgent(t, "claude", "-children", "1"))
	}
	for _, a := range agents {
		m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
		a.waitExit(t, 10*time.Second)
		checkKill(t, m, a, maxAge)
		d.waitLog(t, 10*time.Second, hookLog("hook", a.pid))

		var rec map[string]any
		b := waitFile(t, filepath.Join(dir, "stdin."+strconv.Itoa(a.pid)), 5*time.Second)
		if err := json.Unmarshal(b, &rec); err != nil || !strings.HasSuffix(string(b), "}\n") {
			t.Fatalf("stdin is not one JSON object and a newline: %v: %q", err, b)
		}
		if num(rec["pid"]) != int64(a.pid) || rec["comm"] != "claude" || rec["rule"] != "claude" || rec["host"] != "hooked" ||
			rec["reason"] != "max_age" || rec["outcome"] != "terminated" || rec["final_signal"] != "TERM" ||
			num(rec["session_pid"]) != int64(a.pid) || rec["dry_run"] != false || rec["exited_at"] == nil {
			t.Errorf("record %s", b)
		}
		if late, want := rec["lateness_ms"].(float64), float64(num(m["lateness_ns"]))/1e6; late != want {
			t.Errorf("lateness_ms %v, log says %v", late, want)
		}
		if desc, _ := rec["descendants"].([]any); len(desc) != 1 {
			t.Errorf("descendants %v, want its one child", rec["descendants"])
		}
		for _, k := range []string{"id", "cmdline", "started_at", "deadline", "signalled_at", "session_started_at"} {
			if s, _ := rec[k].(string); s == "" {
				t.Errorf("record lacks %s: %s", k, b)
			}
		}

		envb, _ := os.ReadFile(filepath.Join(dir, "env."+strconv.Itoa(a.pid)))
		vars := strings.Split(strings.TrimSpace(string(envb)), "\n")
		for _, want := range []string{"REAPER_EVENT_PID=" + strconv.Itoa(a.pid), "REAPER_EVENT_COMM=claude",
			"REAPER_EVENT_REASON=max_age", "REAPER_EVENT_OUTCOME=terminated",
			"REAPER_EVENT_SESSION_PID=" + strconv.Itoa(a.pid)} {
			if !slices.Contains(vars, want) {
				t.Errorf("hook environment lacks %s: %q", want, vars)
			}
		}
		if strings.Contains(string(envb), "hunter2") || strings.Contains(string(envb), "DATABASE_URL") || strings.Contains(string(envb), agentEnv) {
			t.Errorf("the daemon's environment reached the hook: %q", vars)
		}
		// No descriptor of the daemon's (database connections, the proc
		// connector socket, pidfds) leaks into the hook: all are O_CLOEXEC.
		if fds, _ := os.ReadFile(filepath.Join(dir, "fds."+strconv.Itoa(a.pid))); strings.Fields(string(fds)) == nil ||
			!slices.Equal(strings.Fields(string(fds)), []string{"0", "1", "2"}) {
			t.Errorf("hook's descriptors %q, want 0 1 2", fds)
		}

		if db != "" {
			conn := dbConn(t, db)
			waitCount(t, conn, 20*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'", a.pid)
			var id, outcome string
			var late float64
			if err := conn.QueryRow(context.Background(), `SELECT id::text, outcome, lateness_ms FROM tel.agent_kills WHERE pid = $1`, a.pid).
				Scan(&id, &outcome, &late); err != nil {
				t.Fatal(err)
			}
			if id != rec["id"] || outcome != rec["outcome"] || late != rec["lateness_ms"] {
				t.Errorf("row (%s, %s, %v) differs from the hook's record %s", id, outcome, late, b)
			}
		}
	}
	if n := len(d.findLogs(func(m map[string]any) bool { return m["logger"] == "hook" && m["msg"] == "hook" })); n != 3 {
		t.Errorf("%d hook runs, want 3 (one per kill, none for the pending rows)", n)
	}
	// Counted just after the run's log line: wait for the counts.
	waitMetric(t, d, "supervisor_hook_runs_total", 3)
	waitMetric(t, d, "supervisor_hook_failures_total", 0)
}

// TestIntegrationHookHangs: hooks that hang (more of them than may run at
// once) are killed after their timeout, with what they started; kills are
// not delayed by them, and each is counted as a failure.
func TestIntegrationHookHangs(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	const timeout = time.Second
	// Records its own PID and a background child's, then hangs.
	hang := fmt.Sprintf(`trap "" TERM; sleep 60 & echo $! > %[1]s/bg.$REAPER_EVENT_PID; echo $$ > %[1]s/sh.$REAPER_EVENT_PID; wait`, dir)
	d := startDaemonUnder(t, nil, []string{"REAPER_HOOK_TIMEOUT=" + timeout.String()},
		"--max-age", maxAge.String(), "--on-kill", hang)
	// Five agents, 300 ms apart: the later ones die while four hooks hang.
	var agents []*agent
	for i := range 5 {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		agents = append(agents, startAgent(t, "claude"))
	}
	for _, a := range agents {
		m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
		a.waitExit(t, 10*time.Second)
		checkKill(t, m, a, maxAge)
		late := time.Duration(num(m["lateness_ns"]))
		if late > 250*time.Millisecond {
			t.Errorf("pid %d killed %s late while hooks hang", a.pid, late)
		}
		t.Logf("pid %d signalled %s after its deadline", a.pid, late)
	}
	for _, a := range agents {
		// The hook's shell and its child, opened while the hook (a
		// descendant of the daemon we started) is still waiting on them.
		var fds []int
		for _, f := range []string{"sh", "bg"} {
			b := waitFile(t, filepath.Join(dir, f+"."+strconv.Itoa(a.pid)), 10*time.Second)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue // already killed: the timeout passed meanwhile
			}
			defer unix.Close(fd)
			fds = append(fds, fd)
		}
		m := d.waitLog(t, 3*timeout+10*time.Second, hookLog("hook timed out: its process group was killed", a.pid))
		if took, _ := time.ParseDuration(m["took"].(string)); took < timeout || took > timeout+2*time.Second {
			t.Errorf("hook for %d ran %s, timeout %s", a.pid, took, timeout)
		}
		for _, fd := range fds {
			if !pidfdDead(fd, 5*time.Second) {
				t.Errorf("a process of the hook for %d outlived its timeout", a.pid)
			}
		}
	}
	// The runner counts a run just after it logs it: wait for the counts.
	for name, want := range map[string]float64{"supervisor_hook_failures_total": 5, "supervisor_hook_runs_total": 5,
		"supervisor_hook_dropped_total": 0, "supervisor_hooks_running": 0} {
		waitMetric(t, d, name, want)
	}
}

// TestIntegrationHookFailsAndReload: a hook exiting 3 is counted and its
// output logged; after a SIGHUP with a new command in the config file the
// new one runs for the next kill.
func TestIntegrationHookFailsAndReload(t *testing.T) {
	if ranApart(t) {
		return
	}
	dir := t.TempDir()
	// Quoted as in a shell: one pair of quotes is stripped, the inner ones stay.
	conf := newConf(t, `REAPER_ON_KILL='echo "no webhook" >&2; exit "3"'`)
	d := startDaemon(t, "--max-age", maxAge.String(), "--config", conf)
	a := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	m := d.waitLog(t, 10*time.Second, hookLog("hook failed", a.pid))
	if num(m["exit"]) != 3 || m["output"] != "no webhook" {
		t.Errorf("failure logged as %v", m)
	}
	// The failure is logged as the hook's wait returns and counted right
	// after: read /metrics until it is counted, within a bound.
	waitMetric(t, d, "supervisor_hook_failures_total", 1)

	writeConf(t, conf, "REAPER_ON_KILL="+recordingHook(dir))
	r := d.reload(t)
	if !strings.Contains(fmt.Sprint(r["changed"]), "on-kill") {
		t.Errorf("reload does not name on-kill: %v", r["changed"])
	}
	b := startAgent(t, "claude")
	d.waitLog(t, maxAge+20*time.Second, killOf(b.pid))
	waitFile(t, filepath.Join(dir, "stdin."+strconv.Itoa(b.pid)), 10*time.Second)
	// The file is written while the hook runs; the run is counted when it
	// ends: wait for the count, bounded.
	waitMetric(t, d, "supervisor_hook_runs_total", 2)
	if n := metricValue(t, d, "supervisor_hook_failures_total"); n != 1 {
		t.Errorf("/metrics: want 2 runs, 1 failure; %v failures", n)
	}
}
