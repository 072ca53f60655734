package tracker

import (
	"errors"
	"os"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

const (
	cgID   = "3f4e7c0b9b5d2a8e1f6c4d7a9b0e2f1c3d5a7b9c0e2f4a6b8c0d2e4f6a8b0c2d"
	cgID2  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	cgUID  = "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8"
	podCg  = "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8f3a2b1c_4d5e_6f70_8192_a3b4c5d6e7f8.slice/cri-containerd-" + cgID + ".scope\n"
	dockCg = "0::/system.slice/docker-" + cgID2 + ".scope\n"
)

// Agents are attributed at their match, from the cgroup they are in then
// (the runtime moved them before exec), and the cgroup is read for
// processes that match a rule only, not on every fork or exec.
func TestCgroupAttribution(t *testing.T) {
	tb, procs := scannedTable(t, ProcInfo{PID: 100, PPID: 1, Start: FromTicks(5), Comm: "containerd-shim", State: 'S'})
	for i := range 5 {
		spawn(tb, procs, 100, int32(110+i), uint64(1_000+i), "sh")
	}
	if procs.cgReads != 0 {
		t.Fatalf("%d cgroup reads for forks and execs of non-agents, want 0", procs.cgReads)
	}
	forkClaude(tb, procs.stat, 200, 2_000)
	procs.cgroup[200] = podCg // moved in before exec
	tb.Apply(execEv(200))
	a, ok := agents(tb)[200]
	want := cgroupinfo.Info{Path: podCg[3 : len(podCg)-1], ContainerID: cgID, PodUID: cgUID}
	if !ok || a.Cgroup != want {
		t.Fatalf("agent %+v (queued %v), want cgroup %+v", a.Cgroup, ok, want)
	}
	if procs.cgReads != 1 {
		t.Errorf("%d cgroup reads, want 1 (at the match)", procs.cgReads)
	}
	if vs := tb.Sessions(); len(vs) != 1 || vs[0].Cgroup != want {
		t.Errorf("sessions %+v: want the agent's cgroup", vs)
	}
	// A resync reads it again: whatever moved while events were lost.
	procs.cgroup[200] = dockCg
	tb.Merge(must(procs.Scan()), true)
	if a := agents(tb)[200]; a.Cgroup.ContainerID != cgID2 || a.Cgroup.PodUID != "" {
		t.Errorf("after a resync: %+v, want the docker scope", a.Cgroup)
	}
}

// A leftover is attributed when it is queued, from where it is then.
func TestCgroupLeftover(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "conmon")
	procs.cgroup[210] = "0::/machine.slice/libpod-" + cgID + ".scope/container\n"
	reads := procs.cgReads
	tb.Apply(exitEv(200, 200, 3_000))
	l, ok := leftovers(tb)[210]
	if !ok || l.Cgroup.ContainerID != cgID {
		t.Fatalf("leftover %+v (queued %v): want container %s", l, ok, cgID)
	}
	if procs.cgReads != reads+1 {
		t.Errorf("%d cgroup reads for one leftover, want 1", procs.cgReads-reads)
	}
	vs := tb.Sessions()
	if len(vs) != 1 || len(vs[0].Leftovers) != 1 || vs[0].Leftovers[0].Cgroup.ContainerID != cgID {
		t.Errorf("sessions %+v: want the leftover's cgroup", vs)
	}
}

// --under cgroup:GLOB scopes in an agent whose own cgroup matches; mixed
// with a name ancestor, either scopes in.
func TestCgroupUnder(t *testing.T) {
	procs := newFakeProcs()
	procs.stat[10] = ProcInfo{PID: 10, PPID: 1, Start: FromTicks(1), Comm: "codium", State: 'S'}
	procs.stat[11] = ProcInfo{PID: 11, PPID: 1, Start: FromTicks(1), Comm: "shim", State: 'S'}
	tb := newTestTable(t, procs, must(ParseAncestor("cgroup:/kubepods*")), must(ParseAncestor("codium")))
	tb.Merge(must(procs.Scan()), false)
	start := func(parent, pid int32, cg string) {
		tb.Apply(fork(parent, pid, uint64(pid)))
		procs.stat[pid] = ProcInfo{PID: pid, PPID: parent, Start: FromTicks(500), Comm: "claude", State: 'S'}
		if cg != "" {
			procs.cgroup[pid] = cg
		}
		tb.Apply(execEv(pid))
	}
	start(11, 20, podCg)  // in a pod: in
	start(11, 21, dockCg) // docker: out
	start(10, 22, dockCg) // docker, but under codium: in
	start(11, 23, "")     // root cgroup: out
	as := agents(tb)
	for pid, in := range map[int32]bool{20: true, 21: false, 22: true, 23: false} {
		if _, ok := as[pid]; ok != in {
			t.Errorf("pid %d queued %v, want %v", pid, ok, in)
		}
	}
	// An unreadable cgroup matches no glob.
	tb.Apply(fork(11, 24, 24))
	delete(procs.stat, 24)
	tb.Apply(commEv(24, 24, "claude"))
	if _, ok := agents(tb)[24]; ok {
		t.Error("an agent whose cgroup could not be read was scoped in by a glob")
	}
}

func TestParseAncestorCgroup(t *testing.T) {
	a, err := ParseAncestor(" cgroup:/kubepods* ")
	if err != nil || a.Cgroup.String() != "/kubepods*" || a.PID != 0 || a.Comm != "" || a.String() != "cgroup:/kubepods*" {
		t.Fatalf("ParseAncestor: %+v %v", a, err)
	}
	for _, bad := range []string{"cgroup:", "cgroup:kubepods*"} {
		if _, err := ParseAncestor(bad); err == nil {
			t.Errorf("ParseAncestor(%q) accepted", bad)
		}
	}
	// A name ancestor never matches a process without a name because a
	// cgroup ancestor has none.
	procs := newFakeProcs()
	procs.stat[10] = ProcInfo{PID: 10, PPID: 1, Start: FromTicks(1), State: 'S'}
	tb := newTestTable(t, procs, must(ParseAncestor("cgroup:/nowhere")))
	tb.Merge(must(procs.Scan()), false)
	tb.Apply(fork(10, 20, 1))
	procs.stat[20] = ProcInfo{PID: 20, PPID: 10, Start: FromTicks(500), Comm: "claude", State: 'S'}
	tb.Apply(execEv(20))
	if len(agents(tb)) != 0 {
		t.Error("a cgroup ancestor scoped in a child of a nameless process")
	}
}

// The real read: this process's own /proc/self/cgroup.
func TestProcFSCgroup(t *testing.T) {
	fs, err := NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	info, err := fs.Cgroup(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile("/proc/self/cgroup")
	want, _ := cgroupinfo.Parse(raw)
	if info != want || info.Path == "" {
		t.Errorf("Cgroup(self) = %+v, want %+v (from %q)", info, want, raw)
	}
	if _, err := fs.Cgroup(1 << 30); !errors.Is(err, ErrGone) {
		t.Errorf("Cgroup of no process: %v, want ErrGone", err)
	}
}

func BenchmarkProcFSCgroup(b *testing.B) {
	fs, err := NewProcFS("/proc")
	if err != nil {
		b.Fatal(err)
	}
	pid := int32(os.Getpid())
	for b.Loop() {
		if _, err := fs.Cgroup(pid); err != nil {
			b.Fatal(err)
		}
	}
}
