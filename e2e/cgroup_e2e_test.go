package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
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
	db := testDatabase(t)
	conn := dbConn(t, db)
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
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end) && left.Reason != "leftover"; time.Sleep(50 * time.Millisecond) {
		for _, v := range d.agentsFor(t, la.pid) {
			left = v
		}
	}
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
	if wait := time.Duration(da.t0+int64(age)-boottime()) + 2*time.Second; wait > 0 {
		time.Sleep(wait)
	}
	if !da.alive() {
		t.Fatal("the docker container's agent was killed outside the --under cgroup:/kubepods* scope")
	}
	if len(d.agentsFor(t, da.pid)) != 0 || len(d.findLogs(killOf(da.pid))) != 0 {
		t.Error("the docker container's agent was tracked or killed outside the scope")
	}
}
