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
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"golang.org/x/sys/unix"
)

// Containers, end to end: first in a real container runtime, then (below)
// attribution by cgroup without one, in real cgroups named as Docker and
// Kubernetes name theirs, and the daemon in a cgroup namespace of its own.

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

// Attribution by cgroup: the test makes the cgroups a runtime would
// (cgroup_helpers_test.go) and puts fake agents in them.

// containerCgroups creates a Docker container's cgroup and a Kubernetes
// pod's CRI container cgroup, named as the runtimes name them.
func containerCgroups(t *testing.T) (dock, pod string, want map[string]cgroupinfo.Info) {
	t.Helper()
	dockID, podID, uid := hex64(), hex64(), podUID()
	dock = makeCgroup(t, "system.slice/docker-"+dockID+".scope")
	pod = makeCgroup(t, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+
		strings.ReplaceAll(uid, "-", "_")+".slice/cri-containerd-"+podID+".scope")
	return dock, pod, map[string]cgroupinfo.Info{
		dock: {Path: cgroupPath(t, dock), ContainerID: dockID},
		pod:  {Path: cgroupPath(t, pod), ContainerID: podID, PodUID: uid},
	}
}

// startInCgroup starts a fake agent that joins the cgroup dir and only
// then renames itself to name, as a runtime moves a container's process
// into its cgroup before exec: the daemon matches it at the rename.
func startInCgroup(t *testing.T, dir, name string, args ...string) *agent {
	t.Helper()
	a := startAgent(t, "cgpre", append([]string{"-cgroup", dir, "-rename", name, "-rename-delay", "0s"}, args...)...)
	a.waitLine(t, "renamed", 10*time.Second)
	return a
}

func checkInfo(t *testing.T, what string, got, want cgroupinfo.Info) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %+v, want %+v", what, got, want)
	}
}

// logInfo is the attribution in a log line or event.
func logInfo(m map[string]any) cgroupinfo.Info {
	s := func(k string) string { v, _ := m[k].(string); return v }
	return cgroupinfo.Info{Path: s("cgroup"), ContainerID: s("container_id"), PodUID: s("pod_uid")}
}

// Agents in a Docker container's cgroup and in a Kubernetes pod's are
// attributed (cgroup, container_id, pod_uid) in /agents, in their agent
// and kill events, in the kill log lines and in tel.agent_kills; a
// leftover of an exited session is attributed under /agents.
func TestIntegrationCgroupAttribution(t *testing.T) {
	if ranApart(t) {
		return
	}
	dock, pod, want := containerCgroups(t)
	db, conn := testDB(t)
	tag := strconv.Itoa(os.Getpid())
	dockName, podName, leftName := "cgd"+tag, "cgk"+tag, "cgl"+tag
	const age = 4 * time.Second
	d := startDaemon(t, "--agent", dockName, "--agent", podName, "--agent", leftName, "--max-age", age.String(),
		"--kill-grace", "1s", "--leftover-grace", "1h", "--database-url", db)
	ev := openEvents(t, d, "?types=agent,kill")

	da := startInCgroup(t, dock, dockName)
	pa := startInCgroup(t, pod, podName)
	// An agent that exits by itself, leaving its child (forked in the pod's
	// cgroup before the agent was matched) behind.
	la := startInCgroup(t, pod, leftName, "-spawn", "label=kid", "-exit-after", "300ms")
	kid, _ := strconv.Atoi(strings.Fields(la.waitLine(t, "child", 10*time.Second))[1])
	pinned(t, kid) // ours (it said so itself, alive): killed at cleanup through this pidfd

	for a, dir := range map[*agent]string{da: dock, pa: pod} {
		v := d.waitTracked(t, a.pid)
		checkInfo(t, fmt.Sprintf("/agents pid %d", a.pid), v.Info, want[dir])
	}
	la.waitExit(t, 10*time.Second)
	var left agentView
	waitFor(t, 20*time.Second, func() bool {
		for _, v := range d.agentsFor(t, la.pid) {
			left = v
		}
		return left.Reason == "leftover"
	}, "the exited session's leftover in /agents")
	if left.Reason != "leftover" || len(left.Leftovers) != 1 || int(left.Leftovers[0].PID) != kid {
		t.Fatalf("/agents for the exited session %d: %+v, want its leftover %d", la.pid, left, kid)
	}
	checkInfo(t, "/agents exited session", left.Info, want[pod])
	checkInfo(t, "/agents leftover", left.Leftovers[0].Info, want[pod])

	// Agent events (three) and kill events (the two at max age), in order.
	got := map[string]cgroupinfo.Info{}
	for len(got) < 5 {
		m := ev.next(t, age+30*time.Second)
		got[fmt.Sprintf("%s %d", m["type"], num(m["pid"]))] = logInfo(m)
	}
	for key, dir := range map[string]string{
		fmt.Sprint("agent ", da.pid): dock, fmt.Sprint("agent ", pa.pid): pod, fmt.Sprint("agent ", la.pid): pod,
		fmt.Sprint("kill ", da.pid): dock, fmt.Sprint("kill ", pa.pid): pod,
	} {
		g, ok := got[key]
		if !ok {
			t.Errorf("no %s event; got %v", key, got)
			continue
		}
		checkInfo(t, key+" event", g, want[dir])
	}

	for a, dir := range map[*agent]string{da: dock, pa: pod} {
		m := d.waitLog(t, age+30*time.Second, killOf(a.pid))
		checkInfo(t, fmt.Sprintf("kill log line of %d", a.pid), logInfo(m), want[dir])
		checkKill(t, m, a, age)
		q := "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'"
		if waitCount(t, conn, 30*time.Second, 1, q, a.pid) != 1 {
			t.Fatalf("no complete kill row for %d", a.pid)
		}
		var cg, cid, uid *string
		if err := conn.QueryRow(context.Background(), `SELECT cgroup, container_id, pod_uid FROM tel.agent_kills
			WHERE pid = $1 AND outcome <> 'pending'`, a.pid).Scan(&cg, &cid, &uid); err != nil {
			t.Fatal(err)
		}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		checkInfo(t, fmt.Sprintf("tel.agent_kills row of %d", a.pid), cgroupinfo.Info{Path: str(cg), ContainerID: str(cid), PodUID: str(uid)}, want[dir])
		if uid != nil && *uid == "" {
			t.Errorf("row of %d: pod_uid is '' instead of NULL", a.pid)
		}
	}
	if want[dock].PodUID != "" {
		t.Fatal("test bug: the docker cgroup names a pod")
	}
}

// --under cgroup:/kubepods* scopes the daemon to the pod: it reaps the
// pod's agent at its max age and leaves the Docker container's agent
// alone, past its own max age. The daemon has no --under PID: the agent
// names are unique to this test, so nothing else can match.
func TestIntegrationUnderCgroup(t *testing.T) {
	if ranApart(t) {
		return
	}
	dock, pod, want := containerCgroups(t)
	tag := strconv.Itoa(os.Getpid())
	dockName, podName := "cgsd"+tag, "cgsk"+tag
	const age = 2 * time.Second
	d := startDaemonCmd(t, exec.Command(supervisorBin, "run", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
		"--log-level", "debug", "--control-socket", "", "--under", "cgroup:/kubepods*",
		"--agent", dockName, "--agent", podName, "--max-age", age.String(), "--kill-grace", "1s"))
	da := startInCgroup(t, dock, dockName)
	pa := startInCgroup(t, pod, podName) // renamed after the docker agent: seen after it
	v := d.waitTracked(t, pa.pid)
	checkInfo(t, "/agents pod agent", v.Info, want[pod])
	m := d.waitLog(t, age+30*time.Second, killOf(pa.pid))
	checkKill(t, m, pa, age)
	pa.waitExit(t, 10*time.Second)
	if !da.alive() {
		t.Fatal("the docker container's agent died with the pod's")
	}
	// It was seen and judged out of scope (not merely never noticed).
	d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "out of scope" && num(m["pid"]) == int64(da.pid) && m["cgroup"] == want[dock].Path
	})
	// Past the docker agent's own max age (plus a margin for a kill that
	// would be late): still alive, never listed, never killed.
	sleepUntil(da.t0 + int64(age+2*time.Second))
	if !da.alive() {
		t.Fatal("the docker container's agent was killed outside the --under cgroup:/kubepods* scope")
	}
	if len(d.agentsFor(t, da.pid)) != 0 || len(d.findLogs(killOf(da.pid))) != 0 {
		t.Error("the docker container's agent was tracked or killed outside the scope")
	}
}

// A daemon in a private cgroup namespace, as the DaemonSet's is: started
// into a cgroup of its own (clone3 CLONE_INTO_CGROUP) and a new cgroup
// namespace rooted there (CLONE_NEWCGROUP in the same clone: the kernel
// roots it at the target cgroup; measured here, the child reads 0::/ and
// PID 1 reads 0::/../../..). Every other process's cgroup then reads
// "/../..…" to it.

// startDaemonInNamespace runs the daemon with args in the cgroup dir and
// a new cgroup namespace rooted at dir.
func startDaemonInNamespace(t *testing.T, dir string, args ...string) *testDaemon {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has joined the cgroup once Start returns
	cmd := exec.Command(supervisorBin, runArgs(t, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd()), Cloneflags: unix.CLONE_NEWCGROUP}
	d := startDaemonCmd(t, cmd)
	b := readFile(t, fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if want := "0::" + cgroupPath(t, dir) + "\n"; !strings.HasSuffix(string(b), want) {
		t.Fatalf("the daemon's cgroup is %q, want %q", b, want)
	}
	var own, init unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/cgroup", cmd.Process.Pid), &own) != nil || unix.Stat("/proc/self/ns/cgroup", &init) != nil || own.Ino == init.Ino {
		t.Fatal("the daemon is not in a cgroup namespace of its own")
	}
	return d
}

// nsCgroups makes the daemon's cgroup and a Kubernetes pod's CRI container
// cgroup and a Docker container's, under names unique to the test: the
// pod's below kubepods-sv<pid>.slice, so that --under
// cgroup:/kubepods-sv<pid>* scopes in this test's pod alone.
func nsCgroups(t *testing.T) (daemon, pod, dock string, want map[string]cgroupinfo.Info) {
	t.Helper()
	tag := "sv" + strconv.Itoa(os.Getpid())
	podID, dockID, uid := hex64(), hex64(), podUID()
	// Registered first, so removed last: after the daemon has stopped.
	daemon = makeCgroup(t, "sv-cgns-"+strconv.Itoa(os.Getpid())+"/daemon")
	pod = makeCgroup(t, "kubepods-"+tag+".slice/kubepods-"+tag+"-besteffort.slice/kubepods-"+tag+"-besteffort-pod"+
		strings.ReplaceAll(uid, "-", "_")+".slice/cri-containerd-"+podID+".scope")
	dock = makeCgroup(t, "system.slice/docker-"+dockID+".scope")
	return daemon, pod, dock, map[string]cgroupinfo.Info{
		pod:  {Path: cgroupPath(t, pod), ContainerID: podID, PodUID: uid},
		dock: {Path: cgroupPath(t, dock), ContainerID: dockID},
	}
}

// In a private cgroup namespace the daemon finds its root's host path and
// works with host paths: --under cgroup:/kubepods-sv<pid>* reaps the pod's
// agent and leaves the Docker container's alone; /agents, the kill log
// line and the tel.agent_kills row show the host path, the container ID and
// the pod UID. The host hierarchy is named by --host-cgroup-root
// (/sys/fs/cgroup: on a hybrid host the hierarchy is its unified/, found by
// itself).
func TestIntegrationCgroupNamespace(t *testing.T) {
	if ranApart(t) {
		return
	}
	daemonDir, pod, dock, want := nsCgroups(t)
	db, conn := testDB(t)
	tag := strconv.Itoa(os.Getpid())
	podName, dockName := "nsk"+tag, "nsd"+tag
	const age = 2 * time.Second
	d := startDaemonInNamespace(t, daemonDir, "--under", "cgroup:/kubepods-sv"+tag+"*", "--host-cgroup-root", "/sys/fs/cgroup",
		"--agent", podName, "--agent", dockName, "--max-age", age.String(), "--kill-grace", "1s", "--database-url", db)
	m := d.waitLog(t, 10*time.Second, nsLog)
	if m["namespace_root"] != cgroupPath(t, daemonDir) || m["level"] != "info" {
		t.Fatalf("start log %v: want namespace_root %s at info", m, cgroupPath(t, daemonDir))
	}

	da := startInCgroup(t, dock, dockName)
	pa := startInCgroup(t, pod, podName)
	v := d.waitTracked(t, pa.pid)
	checkInfo(t, "/agents pod agent", v.Info, want[pod])
	m = d.waitLog(t, age+30*time.Second, killOf(pa.pid))
	checkInfo(t, "kill log line", logInfo(m), want[pod])
	checkKill(t, m, pa, age)
	pa.waitExit(t, 10*time.Second)

	q := "SELECT count(*) FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'"
	if waitCount(t, conn, 30*time.Second, 1, q, pa.pid) != 1 {
		t.Fatalf("no complete kill row for %d", pa.pid)
	}
	var row cgroupinfo.Info
	if err := conn.QueryRow(context.Background(), `SELECT cgroup, coalesce(container_id, ''), coalesce(pod_uid, '')
		FROM tel.agent_kills WHERE pid = $1 AND outcome <> 'pending'`, pa.pid).Scan(&row.Path, &row.ContainerID, &row.PodUID); err != nil {
		t.Fatal(err)
	}
	checkInfo(t, "tel.agent_kills row", row, want[pod])

	// The Docker agent was renamed before the pod's: its deadline has
	// passed too. Out of scope, it is neither tracked nor killed.
	if !da.alive() || len(d.agentsFor(t, da.pid)) != 0 || len(d.findLogs(killOf(da.pid))) != 0 {
		t.Errorf("the docker container's agent (cgroup %s) was tracked or killed outside the scope", want[dock].Path)
	}
}

// nsLog is the start log line about the cgroup namespace.
var nsLog = msgHas("private cgroup namespace")

// Without --host-cgroup-root the host hierarchy is read through host PID
// 1's mounts. Where /proc/1/root may be followed, the root is found; where
// it is refused (this machine's PID 1 holds a capability the test lacks,
// and the kernel answers EACCES even to root; an AppArmor profile does the
// same in a pod) the daemon says so and names the flag.
func TestIntegrationCgroupNamespaceProc1Root(t *testing.T) {
	if ranApart(t) {
		return
	}
	daemonDir, _, _, _ := nsCgroups(t)
	d := startDaemonInNamespace(t, daemonDir, "--agent", "nsr"+strconv.Itoa(os.Getpid()))
	m := d.waitLog(t, 10*time.Second, nsLog)
	if _, err := os.Stat("/proc/1/root/sys/fs/cgroup"); err != nil {
		t.Logf("/proc/1/root refused here: %v", err)
		if m["level"] != "warn" || !strings.Contains(fmt.Sprint(m["error"]), "/proc/1/root") ||
			!strings.Contains(fmt.Sprint(m["msg"]), "--host-cgroup-root") {
			t.Errorf("start log %v: want a warning naming /proc/1/root and --host-cgroup-root", m)
		}
		return
	}
	if m["namespace_root"] != cgroupPath(t, daemonDir) || m["level"] != "info" {
		t.Errorf("start log %v: want namespace_root %s at info", m, cgroupPath(t, daemonDir))
	}
}

// Without the host hierarchy (--host-cgroup-root names an empty directory)
// the root cannot be found: the daemon warns at start, naming why and what
// to mount; paths stay relative, and a relative path matches no glob, not
// even "*". A control agent, scoped in by its parent's name instead, shows
// the daemon at work meanwhile, with its relative path in /agents; the pod
// agent, older than the control, is past its own deadline by the time the
// control is killed, and was never tracked.
func TestIntegrationCgroupNamespaceUnresolved(t *testing.T) {
	if ranApart(t) {
		return
	}
	daemonDir, pod, _, _ := nsCgroups(t)
	tag := strconv.Itoa(os.Getpid())
	podName, ctlName, parentName := "nsuk"+tag, "nsuc"+tag, "nsup"+tag
	const age = 2 * time.Second
	empty := t.TempDir()
	d := startDaemonInNamespace(t, daemonDir, "--under", "cgroup:*", "--under", parentName, "--host-cgroup-root", empty,
		"--agent", podName, "--agent", ctlName, "--max-age", age.String(), "--kill-grace", "1s")
	m := d.waitLog(t, 10*time.Second, nsLog)
	if m["level"] != "warn" || !strings.Contains(fmt.Sprint(m["msg"]), "--host-cgroup-root") ||
		!strings.Contains(fmt.Sprint(m["error"]), empty) || m["under"] == nil {
		t.Fatalf("start log %v: want a warning naming the flag, the directory and the scope", m)
	}

	pa := startInCgroup(t, pod, podName)
	// The control: a child named ctlName of a process named parentName.
	parent := startAgent(t, parentName, "-spawn", "exe="+selfAs(t, ctlName)+",label=ctl")
	ctl := parent.waitPID(t, "child", 10*time.Second)
	pinned(t, ctl)
	v := d.waitTracked(t, ctl)
	if !cgroupinfo.Relative(v.Info.Path) {
		t.Errorf("control agent's cgroup %q: want the relative path read in the namespace", v.Info.Path)
	}
	m = d.waitLog(t, age+30*time.Second, killOf(ctl))
	sleepUntil(num(m["signalled_boot_ns"]) + int64(500*time.Millisecond)) // a margin for a late kill of the older pod agent
	if !pa.alive() || len(d.agentsFor(t, pa.pid)) != 0 || len(d.findLogs(killOf(pa.pid))) != 0 {
		t.Error("the pod's agent was tracked or killed: a relative path matched cgroup:*")
	}
}
