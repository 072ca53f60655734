package e2e

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests in a real container runtime: podman with runc (crun refuses hosts
// with hybrid cgroups), the image scripts/image builds FROM scratch around
// the static binary, plus busybox (sh, sleep, cat, trap) and a fake agent
// named claude, a busybox script. `supervisor init` is the container's
// entrypoint; a host daemon watches containers from outside. Containers
// get unique names and are removed (podman rm -f) when the test ends.

// ctrRunFlags are what every container here runs with: the rlimits the
// container already has (root cannot raise them on this machine's kind of
// VM, and runc would try to set podman's defaults), and no network (none
// of them needs one: no network namespace to set up, no plugin to need).
var ctrRunFlags = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"}

// ctrAgentScript is the fake agent in the test image, /usr/local/bin/claude
// (a script's comm is its file's name): it waits until SIGTERM, then says
// so and exits 143.
const ctrAgentScript = `#!/bin/sh
trap 'echo agent-term; exit 143' TERM
echo agent-up
while :; do sleep 1000 & wait $!; done
`

// ctrApplets are the busybox applets the test image links in /bin.
var ctrApplets = []string{"sh", "sleep", "cat", "mkfifo", "mkdir", "kill", "touch", "ls"}

// ctrTestFile is the test image over the one scripts/image built.
const ctrTestFile = `FROM %s
COPY bin /bin
COPY lbin /usr/local/bin
ENV PATH=/usr/local/bin:/bin
`

// needPodman: podman, runc and a static busybox (Debian's busybox-static)
// for the test image. scripts/test installs them.
func needPodman(t testing.TB) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if !staticELF("/bin/busybox") {
		missing = append(missing, "busybox-static (a static /bin/busybox)")
	}
	if len(missing) == 0 {
		return
	}
	failOrSkip(t, "needs %s for the container tests; apt-get install podman runc busybox-static (scripts/test does)", strings.Join(missing, ", "))
}

// staticELF: path is an ELF executable without an interpreter.
func staticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

var (
	ctrImageOnce sync.Once
	ctrImageTag  string
	ctrImageErr  error
)

// ctrImage is the test image's tag: built once for the daemon under test
// (the tag is a hash of its binary and of the test image's files), by one
// test process at a time (a lock file), reused by every later one.
func ctrImage(t testing.TB) string {
	t.Helper()
	ctrImageOnce.Do(func() { ctrImageTag, ctrImageErr = buildCtrImage() })
	if ctrImageErr != nil {
		t.Fatalf("the test image: %v", ctrImageErr)
	}
	return ctrImageTag
}

func buildCtrImage() (string, error) {
	h := sha256.New()
	f, err := os.Open(supervisorBin)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", err
	}
	fmt.Fprint(h, ctrAgentScript, ctrTestFile, ctrApplets)
	for _, p := range []string{"../scripts/image", "../scripts/lib/build.sh", "../deploy/image/Containerfile"} {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	tag, base := "localhost/supervisor-e2e:"+sum, "localhost/supervisor-e2e-base:"+sum

	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "supervisor-e2e-image.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
	if exec.Command("podman", "image", "exists", tag).Run() == nil {
		return tag, nil
	}
	// What the project ships: scripts/image, FROM scratch, the static
	// binary built from this checkout.
	cmd := exec.Command("../scripts/image", base)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/image: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "sv-ctr-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"bin", "lbin"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	if out, err := exec.Command("cp", "/bin/busybox", filepath.Join(dir, "bin/busybox")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cp busybox: %v: %s", err, out)
	}
	for _, a := range ctrApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lbin/claude"), []byte(ctrAgentScript), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(fmt.Sprintf(ctrTestFile, base)), 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("podman", "--runtime", "runc", "build", "--pull=never", "-t", tag, dir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("podman build: %v\n%s", err, out)
	}
	return tag, nil
}

// ctrSeq numbers this process's containers.
var ctrSeq atomic.Int64

// container is one `podman run` of the test image, attached: its stdout
// is CMD's, its stderr init's JSON log (and CMD's stderr).
type container struct {
	*initRun
	name string
}

// startContainer runs the test image with `supervisor init` and the test
// init flags plus flags as entrypoint, and argv as CMD. The container is
// removed when the test ends, whatever happened.
func startContainer(t testing.TB, flags []string, argv ...string) *container {
	t.Helper()
	image := ctrImage(t)
	name := fmt.Sprintf("sv-e2e-%d-%d", os.Getpid(), ctrSeq.Add(1))
	entry := append([]string{"/usr/bin/supervisor", "init", "--listen", "", "--control-socket", "", "--log-level", "debug"}, flags...)
	ej, _ := json.Marshal(append(entry, "--"))
	args := append([]string{"podman", "--runtime", "runc", "run", "--name", name, "--entrypoint", string(ej)}, ctrRunFlags...)
	args = append(append(args, image), argv...)
	c := &container{initRun: startInitArgv(t, false, args, ""), name: name}
	// Registered after startInitArgv's cleanup, so run before it: the
	// container goes first, and with it the attached podman run.
	t.Cleanup(func() {
		if out, err := exec.Command("podman", "rm", "-f", "--time", "0", name).CombinedOutput(); err != nil {
			t.Errorf("podman rm -f %s: %v: %s", name, err, out)
		}
	})
	return c
}

// inspect is a field of podman inspect (a Go template such as .State.Pid).
func (c *container) inspect(t testing.TB, field string) string {
	t.Helper()
	v, err := c.tryInspect(field)
	if err != nil {
		t.Fatalf("podman inspect %s: %v", c.name, err)
	}
	return v
}

// tryInspect is inspect for a container podman run may not have created
// yet.
func (c *container) tryInspect(field string) (string, error) {
	out, err := exec.Command("podman", "inspect", "--format", "{{"+field+"}}", c.name).Output()
	return strings.TrimSpace(string(out)), err
}

// initPID is the host PID of the container's PID 1, `supervisor init`,
// once it runs.
func (c *container) initPID(t testing.TB) int {
	t.Helper()
	var pid int
	waitFor(t, 30*time.Second, func() bool {
		v, _ := c.tryInspect(".State.Pid")
		pid, _ = strconv.Atoi(v)
		return pid > 0 && procComm(pid) == "supervisor"
	}, "container %s has no running init", c.name)
	return pid
}

// child waits for init's child named comm and returns its host PID.
func (c *container) child(t testing.TB, comm string) int {
	t.Helper()
	init := c.initPID(t)
	var pid int
	waitFor(t, 30*time.Second, func() bool {
		for p := range childrenOf(init) {
			if procComm(p) == comm {
				pid = p
				return true
			}
		}
		return false
	}, "no %s under the container's init %d", comm, init)
	return pid
}

// podman runs a podman command on the container and fails the test if it
// fails.
func (c *container) podman(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("podman", append(args, c.name)...).CombinedOutput(); err != nil {
		t.Fatalf("podman %s %s: %v: %s", strings.Join(args, " "), c.name, err, out)
	}
}

// TestIntegrationContainerReapsOrphans: 30 orphans of CMD in a container,
// reparented to `supervisor init` (PID 1 there), are reaped once they exit:
// no zombie is left under init. They block on a FIFO until the test
// writes to it, so all 30 are seen as init's children first.
func TestIntegrationContainerReapsOrphans(t *testing.T) {
	if ranApart(t, needPodman) {
		return
	}
	script := `mkdir -p /tmp; mkfifo /tmp/f; i=0; while [ $i -lt 30 ]; do (cat /tmp/f &); i=$((i+1)); done; echo made
while [ ! -e /tmp/done ]; do sleep 0.05; done; echo bye`
	c := startContainer(t, []string{"--agent", "init-none"}, "sh", "-c", script)
	c.waitOut(t, 60*time.Second, "made")
	init := c.initPID(t)
	// count is init's live children named cat (the orphans) and its zombies.
	count := func() (cats, zombies int) {
		for p, st := range childrenOf(init) {
			switch {
			case st == "Z":
				zombies++
			case procComm(p) == "cat":
				cats++
			}
		}
		return
	}
	waitFor(t, 30*time.Second, func() bool { n, _ := count(); return n == 30 }, "30 orphans (cat) reparented to init %d", init)
	// Open the FIFO for writing (the readers' opens return), then close
	// it: every cat reads EOF and exits.
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/root/tmp/f", init), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitFor(t, 30*time.Second, func() bool { n, z := count(); return n == 0 && z == 0 },
		"no orphan and no zombie left under init %d", init)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/done", init), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitOut(t, 30*time.Second, "bye")
	if st := c.wait(t, 30*time.Second); st != 0 {
		t.Errorf("the container exited %d, want CMD's 0", st)
	}
	m := c.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "init exits" })
	if r := num(m["reaped"]); r < 30 {
		t.Errorf("init reaped %d processes, want the 30 orphans at least", r)
	}
}

// TestIntegrationContainerAgentDeadline: an agent inside the container,
// found by the init's daemon polling /proc there, is killed at its start +
// max age and not before, by the daemon's own record (boot-time ns, the
// clock the kernel's start time is on) against the start the kernel shows.
func TestIntegrationContainerAgentDeadline(t *testing.T) {
	if ranApart(t, needPodman) {
		return
	}
	const age = 2 * time.Second
	script := `claude & a=$!; echo "agentstat $(cat /proc/$a/stat)"; wait $a; echo "agent-exit $?"`
	c := startContainer(t, []string{"--agent", "claude", "--max-age", age.String(), "--kill-grace", "1s"}, "sh", "-c", script)
	lo, hi := startRange(t, c.waitOut(t, 60*time.Second, "agentstat ").text)
	if exit := c.waitOut(t, age+30*time.Second, "agent-exit ").text; exit != "agent-exit 143" {
		t.Errorf("%s: want 143, the fake agent's exit on SIGTERM", exit)
	}
	m := c.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "kill" && m["comm"] == "claude" })
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if start < lo || start >= hi+int64(time.Millisecond) {
		t.Errorf("kill record: start %d, the kernel's is in [%d, %d)", start, lo, hi)
	}
	if deadline < start+int64(age) {
		t.Errorf("kill record: deadline %d before start %d + max age", deadline, start)
	}
	if signalled < deadline {
		t.Errorf("kill record: signalled %s before the deadline", time.Duration(deadline-signalled))
	}
	if late := time.Duration(signalled - deadline); late > time.Second {
		t.Errorf("kill record: signalled %s after the deadline", late)
	}
	if st := c.wait(t, 30*time.Second); st != 0 {
		t.Errorf("the container exited %d, want CMD's 0", st)
	}
}

// TestIntegrationContainerExitCode: the container's exit code is CMD's,
// and 128 + n when CMD dies of signal n.
func TestIntegrationContainerExitCode(t *testing.T) {
	if ranApart(t, needPodman) {
		return
	}
	for script, want := range map[string]int{"exit 7": 7, "kill -USR1 $$": 128 + 10} {
		c := startContainer(t, []string{"--agent", "init-none"}, "sh", "-c", script)
		if st := c.wait(t, 60*time.Second); st != want {
			t.Errorf("CMD %q: the container exited %d, want %d", script, st, want)
		}
		if got := c.inspect(t, ".State.ExitCode"); got != strconv.Itoa(want) {
			t.Errorf("CMD %q: podman inspect says exit code %s, want %d", script, got, want)
		}
	}
}

// TestIntegrationContainerSignals: `podman kill -s HUP` reaches CMD through
// init, and `podman stop` delivers SIGTERM to CMD, whose trap's exit code
// is the container's: well within the stop timeout, not SIGKILL's 137.
func TestIntegrationContainerSignals(t *testing.T) {
	if ranApart(t, needPodman) {
		return
	}
	script := `trap 'echo got-hup' HUP; trap 'echo got-term; exit 42' TERM; echo ready
while :; do sleep 1000 & wait $!; done`
	c := startContainer(t, []string{"--agent", "init-none"}, "sh", "-c", script)
	c.waitOut(t, 60*time.Second, "ready")
	c.podman(t, "kill", "-s", "HUP")
	c.waitOut(t, 30*time.Second, "got-hup")
	const timeout = 60
	t0 := time.Now()
	c.podman(t, "stop", "--time", strconv.Itoa(timeout))
	took := time.Since(t0)
	c.waitOut(t, 30*time.Second, "got-term")
	if st := c.wait(t, 30*time.Second); st != 42 {
		t.Errorf("the container exited %d after podman stop, want 42 from CMD's TERM trap", st)
	}
	if took >= timeout*time.Second {
		t.Errorf("podman stop took %s: the stop timeout ran out", took)
	}
	m := c.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "init exits" })
	if num(m["forwarded"]) < 2 {
		t.Errorf("init's exit line %v: want at least 2 signals forwarded (HUP, TERM)", m)
	}
	t.Logf("podman stop returned after %s", took)
}

// TestIntegrationContainerHostDaemon: a daemon on the host, scoped with
// --under cgroup: to one container's cgroup, sees that container's agent
// with podman's full container ID in /agents, in the kill event, the kill
// log line and its tel.agent_kills row, and kills it at its max age; the
// agent of a second container, started earlier and so past its own max age
// by then, is out of scope and left alone.
func TestIntegrationContainerHostDaemon(t *testing.T) {
	if ranApart(t, needPodman) {
		return
	}
	db, conn := testDB(t)
	const age = 4 * time.Second
	other := startContainer(t, []string{"--agent", "init-none"}, "claude")
	otherPID := other.child(t, "claude")
	c := startContainer(t, []string{"--agent", "init-none"}, "claude")
	pid := c.child(t, "claude")
	id := c.inspect(t, ".Id")
	if len(id) != 64 {
		t.Fatalf("podman's container ID %q: want 64 hex digits", id)
	}
	var path string
	for _, l := range strings.Split(string(readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			path = p
		}
	}
	if !strings.Contains(path, "libpod-"+id) {
		t.Fatalf("the agent's cgroup %q does not name the container %s", path, id)
	}
	d := startDaemonCmd(t, exec.Command(supervisorBin, runArgs(t, "--under", "cgroup:"+path, "--agent", "claude",
		"--max-age", age.String(), "--kill-grace", "1s", "--database-url", db)...))
	ev := openEvents(t, d, "?types=kill")

	v := d.waitTracked(t, pid)
	if v.ContainerID != id || v.Path != path {
		t.Errorf("/agents: container_id %q cgroup %q, want %q %q", v.ContainerID, v.Path, id, path)
	}
	m := d.waitLog(t, age+30*time.Second, killOf(pid))
	if info := logInfo(m); info.ContainerID != id || info.Path != path {
		t.Errorf("kill line: %+v, want container %s in %s", info, id, path)
	}
	deadline, signalled, start := num(m["deadline_boot_ns"]), num(m["signalled_boot_ns"]), num(m["start_boot_ns"])
	if signalled < deadline || deadline < start+int64(age) {
		t.Errorf("kill line: start %d, deadline %d, signalled %d: early", start, deadline, signalled)
	}
	e := ev.next(t, 30*time.Second)
	if num(e["pid"]) != int64(pid) || e["container_id"] != id {
		t.Errorf("kill event %v: want pid %d, container_id %s", e, pid, id)
	}
	q := "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'"
	if waitCount(t, conn, 30*time.Second, 1, q, pid) != 1 {
		t.Fatalf("no complete kill row for %d", pid)
	}
	var cid, cg string
	if err := conn.QueryRow(context.Background(), `SELECT coalesce(container_id, ''), coalesce(cgroup, '')
		FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'`, pid).Scan(&cid, &cg); err != nil {
		t.Fatal(err)
	}
	if cid != id || cg != path {
		t.Errorf("tel.agent_kills: container_id %q cgroup %q, want %q %q", cid, cg, id, path)
	}
	c.waitOut(t, 30*time.Second, "agent-term")
	if st := c.wait(t, 30*time.Second); st != 143 {
		t.Errorf("the container exited %d, want 143, its agent's exit on SIGTERM", st)
	}

	// The other container's agent: seen, out of scope, alive past its own
	// max age (it started before the one killed at its max age, plus a
	// margin for a kill that would be late).
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "out of scope" && num(m["pid"]) == int64(otherPID)
	})
	sleepUntil(signalled + int64(2*time.Second))
	if procComm(otherPID) != "claude" || other.out.has("agent-term") {
		t.Fatal("the other container's agent died: killed outside the --under cgroup: scope")
	}
	if len(d.agentsFor(t, otherPID)) != 0 || len(d.findLogs(killOf(otherPID))) != 0 {
		t.Error("the other container's agent was tracked or killed outside the scope")
	}
}
