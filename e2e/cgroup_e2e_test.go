package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"golang.org/x/sys/unix"
)

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
func nsLog(m map[string]any) bool {
	return strings.Contains(fmt.Sprint(m["msg"]), "private cgroup namespace")
}

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
