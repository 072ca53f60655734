package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/psi"
	"github.com/agent-supervisor/supervisor/internal/psi/psitest"
)

// holder is a fake agent holding mb MiB of anonymous memory (resident, as
// the resource sampler counts it).
type holder struct {
	*agent
	mb int
}

// startHolder starts a holder of mb MiB as comm, with extra environment,
// and waits until it holds the memory.
func startHolder(t testing.TB, comm string, mb int, env ...string) *holder {
	t.Helper()
	h := &holder{agent: startAgentEnv(t, comm, env, "-hold-mb", strconv.Itoa(mb)), mb: mb}
	h.waitLine(t, "held", 30*time.Second)
	return h
}

// pressureSpec is "some 100ms 1s" where this process may register any
// window; without CAP_SYS_RESOURCE (a container's root, as here) the
// kernel takes only multiples of 2 s, so the same share of a 2 s window.
func pressureSpec(t testing.TB) string {
	if psi.Privileged() {
		return "some 100ms 1s"
	}
	t.Logf("no CAP_SYS_RESOURCE: the trigger window must be a multiple of 2s; using some 200ms 2s")
	return "some 200ms 2s"
}

// pressureTestMinAge is --pressure-min-age in the pressure tests: longer
// than starting the holders and seeing their figures takes, so a trigger
// fired by pressure from elsewhere before then finds no candidate.
const pressureTestMinAge = "10s"

func needPSI(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/proc/pressure/memory"); err != nil {
		failOrSkip(t, "the kernel has no PSI (/proc/pressure/memory: %v)", err)
	}
}

// waitFigures waits until /agents shows each holder's session with at
// least 90 % of what it holds.
func waitFigures(t testing.TB, d *testDaemon, hs ...*holder) {
	t.Helper()
	want := map[int]int64{}
	for _, h := range hs {
		want[h.pid] = int64(h.mb) << 20 * 9 / 10
	}
	waitSessionMemory(t, d, want)
}

// TestIntegrationPressure: real memory pressure from the rig (a 20 MiB
// memory cgroup re-reading a 30 MiB file) fires a real PSI trigger; the
// daemon kills the largest non-exempt session first, the next only after
// the cooldown, and never the exempt one, however large. The readers are
// not agents and are never touched.
func TestIntegrationPressure(t *testing.T) {
	if ranApartTurn(t, "pressure", needPSI) {
		return
	}
	dsn := testDatabase(t)
	const cooldown = 5 * time.Second
	spec := pressureSpec(t)
	// The minimum age keeps every holder out of reach until the test has
	// seen their figures: pressure from elsewhere on the box (another
	// package's rig, run in parallel by go test) may fire first.
	d := startDaemon(t, "--agent", "presshold", "--agent", "presskept", "--keep", "presskept", "--max-age", "1h", "--kill-grace", "2s",
		"--pressure", spec, "--pressure-min-age", pressureTestMinAge, "--pressure-cooldown", cooldown.String(),
		"--resource-interval", "500ms", "--database-url", dsn)
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure trigger registered" && m["file"] == "/proc/pressure/memory"
	})
	big := startHolder(t, "presshold", 300)
	mid := startHolder(t, "presshold", 150)
	// Kept by --keep, root's word: exempt, however large. (REAPER_KEEP=1
	// would not be: its memory counts.)
	kept := startHolder(t, "presskept", 500)
	waitFigures(t, d, big, mid) // a kept agent has no deadline, so no /agents entry
	ev := openEvents(t, d, "?types=pressure")

	rig := startPressureRig(t)
	readers := rig.Procs()

	isKill := func(m map[string]any) bool { return m["msg"] == "memory pressure: killing the largest session" }
	first := d.waitLog(t, 90*time.Second, isKill)
	if num(first["session_pid"]) != int64(big.pid) {
		t.Fatalf("first pressure kill: session %v; want the largest non-exempt, %d (300 MiB)", first["session_pid"], big.pid)
	}
	if mem := num(first["memory_bytes"]); mem < 270<<20 {
		t.Errorf("first kill's log: memory_bytes %d; want about 300 MiB", mem)
	}
	if _, ok := first["some_avg10"].(float64); !ok {
		t.Errorf("first kill's log lacks some_avg10: %v", first)
	}
	big.waitExit(t, 30*time.Second)
	fired1 := d.waitLog(t, 5*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure trigger fired" && m["outcome"] == "killed" && num(m["session_pid"]) == int64(big.pid)
	})
	woke1 := num(fired1["woke_boot_ns"])

	second := d.waitLog(t, 90*time.Second, func(m map[string]any) bool { return isKill(m) && num(m["session_pid"]) != int64(big.pid) })
	if num(second["session_pid"]) != int64(mid.pid) {
		t.Fatalf("second pressure kill: session %v; want %d (150 MiB; the 500 MiB one is exempt)", second["session_pid"], mid.pid)
	}
	mid.waitExit(t, 30*time.Second)
	// Never before the cooldown: by the holder's own clock, SIGTERM came
	// at least the cooldown after the wake-up that killed the first.
	if term, ok := mid.termAt(); !ok {
		t.Errorf("the second holder recorded no SIGTERM")
	} else if gap := time.Duration(term - woke1); gap < cooldown {
		t.Errorf("second victim signalled %v after the first kill's trigger; want at least the cooldown %v", gap, cooldown)
	} else {
		t.Logf("second victim signalled %v after the first kill's trigger (cooldown %v)", gap, cooldown)
	}
	// Triggers during the cooldown were counted, not acted on.
	cooling := d.findLogs(func(m map[string]any) bool {
		return m["msg"] == "memory pressure trigger fired" && m["outcome"] == "cooling"
	})
	t.Logf("%d triggers during the cooldown", len(cooling))

	// Pressure goes on; with only the exempt session left, a trigger after
	// the next cooldown finds no candidate and kills nothing.
	d.waitLog(t, 90*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure trigger fired" && m["outcome"] == "no_candidate"
	})
	if _, signalled := kept.termAt(); !kept.alive() || signalled {
		t.Fatal("the exempt session was signalled")
	}
	for _, pid := range readers {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("rig reader %d is gone (%v): the daemon must not touch non-agents", pid, err)
		}
	}

	// The event stream: one pressure event per trigger, the victim's
	// session on the killing ones.
	victims := map[int64]bool{}
	for n := 0; len(victims) < 2; n++ {
		m := ev.next(t, 30*time.Second)
		if m["resource"] != "memory" {
			t.Fatalf("pressure event: %v", m)
		}
		if n == 0 {
			b, _ := json.Marshal(m)
			t.Logf("first pressure event: %s", b)
		}
		if p := num(m["session_pid"]); p != 0 {
			victims[p] = true
		}
	}
	if !victims[int64(big.pid)] || !victims[int64(mid.pid)] {
		t.Errorf("pressure events named sessions %v; want %d and %d", victims, big.pid, mid.pid)
	}

	// The kill rows: reason pressure, the victim's memory and the PSI
	// figures at the decision.
	conn := dbConn(t, dsn)
	for _, h := range []*holder{big, mid} {
		waitCount(t, conn, 20*time.Second, 1,
			"SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND reason = 'pressure' AND outcome <> 'pending'", h.pid)
		var mem int64
		var details []byte
		if err := conn.QueryRow(context.Background(),
			"SELECT memory_bytes, details FROM tel.agent_kills WHERE pid = $1 AND reason = 'pressure' AND outcome <> 'pending'", h.pid).
			Scan(&mem, &details); err != nil {
			t.Fatal(err)
		}
		var det map[string]float64
		if err := json.Unmarshal(details, &det); err != nil {
			t.Fatalf("details %s: %v", details, err)
		}
		_, some := det["psi_some_avg10"]
		_, full := det["psi_full_avg10"]
		if mem < int64(h.mb)<<20*9/10 || !some || !full {
			t.Errorf("kill row of %d (%d MiB): memory_bytes %d, details %s", h.pid, h.mb, mem, details)
		}
	}
	if n := queryInt(t, conn, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1", kept.pid); n != 0 {
		t.Errorf("%d kill rows for the exempt session", n)
	}
	if v := metricValue(t, d, `supervisor_pressure_events_total{outcome="killed"}`); v != 2 {
		t.Errorf(`supervisor_pressure_events_total{outcome="killed"} = %v; want 2`, v)
	}
	if v := metricValue(t, d, `supervisor_pressure_events_total{outcome="no_candidate"}`); v < 1 {
		t.Errorf(`supervisor_pressure_events_total{outcome="no_candidate"} = %v; want at least 1`, v)
	}
}

// Without CAP_SYS_RESOURCE (a container's root) the kernel refuses a window
// that is not a multiple of 2 s: the daemon does not start, and says why.
// The daemon runs through the capability dropper (modes_test.go),
// so this holds on a runner that has the capability too; one that started
// anyway would be stopped by the context and fail the test.
func TestIntegrationPressureWindowRefused(t *testing.T) {
	if ranApart(t, needPSI) {
		return
	}
	t.Logf("this process has CAP_SYS_RESOURCE: %v (the daemon runs without it)", psi.Privileged())
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, supervisorBin, "run", "--listen", "127.0.0.1:0", "--under", strconv.Itoa(os.Getpid()),
		"--state-dir", t.TempDir(), "--control-socket", "", "--pressure", "some 100ms 1s")
	cmd.Env = append(os.Environ(), dropCapsEnv+"=sys_resource")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the daemon started with a 1s window without CAP_SYS_RESOURCE (was the capability dropped?)\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 126 || !strings.Contains(string(out), "CAP_SYS_RESOURCE") || !strings.Contains(string(out), "some 100ms 1s") {
		t.Fatalf("daemon with a 1s window without CAP_SYS_RESOURCE: %v\n%s", err, out)
	}
	t.Logf("refused: %s", lastLine(out))
}

// lastLine is b's last non-empty line.
func lastLine(b []byte) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return l[len(l)-1]
}

// SIGHUP turns the trigger on, re-registers it when the spec changes, and
// removes it; the limits change without touching the trigger.
func TestIntegrationPressureReload(t *testing.T) {
	if ranApart(t, needPSI) {
		return
	}
	conf := newConf(t, "REAPER_MAX_AGE=1h")
	d := startDaemon(t, "--config", conf)
	reload := func(lines ...string) {
		t.Helper()
		writeConf(t, conf, lines...)
		d.hup()
	}
	registered := func(spec string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return m["msg"] == "memory pressure trigger registered" && m["trigger"] == spec
		}
	}
	reload("REAPER_PRESSURE=full 10s 10s")
	d.waitLog(t, 10*time.Second, registered("full 10s 10s"))
	reload("REAPER_PRESSURE=full 8s 10s", "REAPER_PRESSURE_COOLDOWN=3s")
	d.waitLog(t, 10*time.Second, registered("full 8s 10s"))
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure limits reloaded" && m["cooldown"] == "3s"
	})
	writeConf(t, conf, "REAPER_PRESSURE=full 8s 11s") // bad: rejected as a whole
	if rej := d.reloadRejected(t); !strings.Contains(fmt.Sprint(rej["error"]), "REAPER_PRESSURE") {
		t.Errorf("rejection does not name the variable: %v", rej)
	}
	reload()
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "memory pressure trigger removed" })
	if n := len(d.findLogs(func(m map[string]any) bool { return m["msg"] == "memory pressure trigger registered" })); n != 2 {
		t.Errorf("trigger registered %d times; want 2", n)
	}
}

// In a dry run the pressure policy reports what it would kill, in order,
// one per cooldown, and signals nothing.
func TestIntegrationPressureDryRun(t *testing.T) {
	if ranApartTurn(t, "pressure", needPSI) {
		return
	}
	d := startDaemon(t, "--agent", "presshold", "--max-age", "1h", "--dry-run",
		"--pressure", pressureSpec(t), "--pressure-min-age", pressureTestMinAge, "--pressure-cooldown", "3s", "--resource-interval", "500ms")
	big := startHolder(t, "presshold", 200)
	small := startHolder(t, "presshold", 100)
	waitFigures(t, d, big, small)
	startPressureRig(t)
	would := func(pid int) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return m["msg"] == "would kill session" && m["reason"] == "pressure" && num(m["session_pid"]) == int64(pid)
		}
	}
	first := d.waitLog(t, 90*time.Second, func(m map[string]any) bool { return m["msg"] == "would kill session" })
	if num(first["session_pid"]) != int64(big.pid) {
		t.Fatalf("first dry-run report: %v; want session %d", first, big.pid)
	}
	d.waitLog(t, 90*time.Second, would(small.pid))
	_, bigTerm := big.termAt()
	_, smallTerm := small.termAt()
	if !big.alive() || !small.alive() || bigTerm || smallTerm {
		t.Fatal("a dry run signalled a session")
	}
}

// --pressure-file alone registers nothing, and says so.
func TestIntegrationPressureFileAlone(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h", "--pressure-file", "/proc/pressure/memory")
	d.waitLog(t, 20*time.Second, func(m map[string]any) bool {
		return m["msg"] == "--pressure-file is set without --pressure: no trigger is registered" && m["pressure_file"] == "/proc/pressure/memory"
	})
}

// limitedCgroup makes a memory-limited cgroup (1 GiB: a limit, not
// pressure) and returns the cgroup.procs files a process writes itself
// into to join it, and the memory.pressure file the daemon should choose
// when its sessions share that limit. On a hybrid host that is a v1
// memory cgroup plus a unified-hierarchy group of the same name, as
// systemd makes for a unit with MemoryMax=. Removed at cleanup.
func limitedCgroup(t *testing.T) (procs []string, pressure string) {
	t.Helper()
	name := fmt.Sprintf("psi-file-%d", os.Getpid())
	unified := filepath.Join("/sys/fs/cgroup/unified", name)
	if !cgFileExists("/sys/fs/cgroup/cgroup.controllers") && !cgFileExists(filepath.Dir(unified)+"/cgroup.controllers") {
		failOrSkip(t, "no memory cgroup under /sys/fs/cgroup (neither v2 nor v1 memory with a unified hierarchy)")
	}
	dir, v2 := psitest.Group(t, name, 1024)
	procs = []string{filepath.Join(dir, "cgroup.procs")}
	if v2 {
		return procs, filepath.Join(dir, "memory.pressure")
	}
	psitest.Mkdir(t, unified)
	return append(procs, filepath.Join(unified, "cgroup.procs")), filepath.Join(unified, "memory.pressure")
}

func cgFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// registered runs the daemon (args after the binary) in the cgroups whose
// procs files are given (a shell joins them, then execs it) and returns its
// "memory pressure trigger registered" line. The daemon is ended at once
// (init: its command is a short sleep; run: killed).
func registered(t *testing.T, procs []string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	script := `for f in $JOIN; do echo $$ > "$f" || exit 1; done; exec "$@"`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "sh", supervisorBin}, args...)...)
	join := ""
	for _, p := range procs {
		join += p + " "
	}
	cmd.Env = append(os.Environ(), "JOIN="+join)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill() // our child, not yet reaped
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "memory pressure trigger registered" {
			return m
		}
	}
	t.Fatalf("no \"memory pressure trigger registered\" line:\n%s", lines)
	return nil
}

// TestIntegrationPressureFile: in a memory-limited cgroup, `supervisor init`
// (its command shares the limit) watches that cgroup's memory.pressure,
// while `supervisor run` there (a unit's MemoryMax=, a pod's limit: the
// daemon alone) watches /proc/pressure/memory; --pressure-file overrides
// both.
func TestIntegrationPressureFile(t *testing.T) {
	if ranApartTurn(t, "pressure", needPSI) {
		return
	}
	procs, want := limitedCgroup(t)
	common := []string{"--pressure", "some 200ms 2s", "--under", strconv.Itoa(os.Getpid()), "--listen", "", "--control-socket", ""}

	m := registered(t, procs, append(append([]string{"init", "--state-dir", t.TempDir()}, common...), "--", "sleep", "2")...)
	if m["file"] != want || m["shared_with_sessions"] != true {
		t.Errorf("init in a limited cgroup: file %v (shared %v, why %q); want %s", m["file"], m["shared_with_sessions"], m["why"], want)
	}
	t.Logf("init: %v (%v)", m["file"], m["why"])

	m = registered(t, procs, append([]string{"run", "--state-dir", t.TempDir()}, common...)...)
	if m["file"] != "/proc/pressure/memory" || m["shared_with_sessions"] != false || m["cgroup_limit_bytes"] != float64(1<<30) {
		t.Errorf("run in a limited cgroup: file %v (shared %v, limit %v, why %q); want /proc/pressure/memory", m["file"], m["shared_with_sessions"], m["cgroup_limit_bytes"], m["why"])
	}
	t.Logf("run: %v (%v)", m["file"], m["why"])

	m = registered(t, procs, append([]string{"run", "--state-dir", t.TempDir(), "--pressure-file", want}, common...)...)
	if m["file"] != want || m["why"] != "--pressure-file" {
		t.Errorf("run with --pressure-file %s: file %v, why %q", want, m["file"], m["why"])
	}
}
