package psi

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const pressureIdle = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"

// tree writes files (path → contents) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	root := t.TempDir()
	for p, v := range files {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLocate(t *testing.T) {
	const (
		unlimited = "9223372036854771712\n"
		sys       = "proc/pressure/memory" // the system-wide file
		sup       = "0::/system.slice/sup.service\n"
		supGroup  = "/system.slice/sup.service"
	)
	cmd := []int{100} // the init command, where a case names it
	// The daemon's /proc/self/cgroup, process 100's (the init command,
	// when the case names it as a member), the system-wide pressure file
	// and files, merged.
	procs := func(self, cmd string, files ...map[string]string) map[string]string {
		m := map[string]string{"proc/self/cgroup": self, "proc/100/cgroup": cmd, "proc/pressure/memory": pressureIdle}
		for _, f := range files {
			for k, v := range f {
				m[k] = v
			}
		}
		return m
	}
	v2 := func(self, cmd string, files map[string]string) map[string]string {
		return procs(self, cmd, map[string]string{"cg/cgroup.controllers": "cpu memory pids\n"}, files)
	}
	// Hybrid: v1 controllers under cg/, the unified hierarchy at
	// cg/unified.
	hybrid := func(self, cmd string, files map[string]string) map[string]string {
		return procs(self, cmd, map[string]string{"cg/unified/cgroup.controllers": "", "cg/memory/memory.limit_in_bytes": unlimited}, files)
	}
	service := map[string]string{
		"cg/system.slice/memory.max":                  "max\n",
		"cg/system.slice/sup.service/memory.max":      "1073741824\n",
		"cg/system.slice/sup.service/memory.pressure": pressureIdle,
	}
	box := map[string]string{
		"cg/box/memory.max":             "8589934592\n",
		"cg/box/memory.pressure":        pressureIdle,
		"cg/box/daemon/memory.max":      "max\n",
		"cg/box/daemon/memory.pressure": pressureIdle,
	}
	// The Kubernetes DaemonSet: a private cgroup namespace whose root is
	// the daemon's container, limited to 256Mi (30-daemonset.yaml); the
	// agents' pods read "/../../…" from inside it.
	pod := map[string]string{
		"cg/memory.max":      "268435456\n",
		"cg/memory.pressure": pressureIdle,
	}
	// sup.service limited to 2 GiB by the v1 memory controller, with a
	// unified twin that has the pressure file.
	twin := map[string]string{
		"cg/unified/system.slice/sup.service/memory.pressure":      pressureIdle,
		"cg/memory/system.slice/memory.limit_in_bytes":             unlimited,
		"cg/memory/system.slice/sup.service/memory.limit_in_bytes": "2147483648\n",
	}
	for _, tc := range []struct {
		name    string
		files   map[string]string
		members []int // nil: supervisor run
		path    string
		cgroup  string
		limit   int64
		shared  bool
	}{
		{name: "pure v2, unlimited", files: v2(sup, "", map[string]string{
			"cg/system.slice/memory.max":                  "max\n",
			"cg/system.slice/sup.service/memory.max":      "max\n",
			"cg/system.slice/sup.service/memory.pressure": pressureIdle,
		}), path: sys},
		{name: "run, own unit limited (MemoryMax=): the agents are elsewhere, system-wide",
			files: v2(sup, "", service), path: sys, cgroup: supGroup, limit: 1 << 30},
		{name: "init, own group limited, the command inside: its file",
			files: v2(sup, sup, service), members: cmd, path: "cg/system.slice/sup.service/memory.pressure", cgroup: supGroup, limit: 1 << 30, shared: true},
		{name: "init, the command moved out of the limited group: system-wide",
			files: v2(sup, "0::/user.slice/x\n", service), members: cmd, path: sys, cgroup: supGroup, limit: 1 << 30},
		{name: "init, the command's cgroup unreadable (gone): system-wide",
			files: v2(sup, "", service), members: []int{101}, path: sys, cgroup: supGroup, limit: 1 << 30},
		{name: "init, ancestor limited, the command in a sibling below it: the ancestor's file",
			files: v2("0::/box/daemon\n", "0::/box/agents\n", box), members: cmd, path: "cg/box/memory.pressure", cgroup: "/box", limit: 8 << 30, shared: true},
		{name: "init, prefix is not ancestry (/boxer is not under /box)",
			files: v2("0::/box/daemon\n", "0::/boxer\n", box), members: cmd, path: sys, cgroup: "/box", limit: 8 << 30},
		{name: "run, ancestor limited: system-wide",
			files: v2("0::/box/daemon\n", "", box), path: sys, cgroup: "/box", limit: 8 << 30},
		{name: "pure v2, in the root group (which has no memory.max)",
			files: v2("0::/\n", "0::/\n", nil), members: cmd, path: sys},
		{name: "DaemonSet: run in a private cgroup namespace, the pod limited: the node's file",
			files: v2("0::/\n", "0::/../../kubepods.slice/pod1/cri-x\n", pod), path: sys, cgroup: "/", limit: 256 << 20},
		{name: "container init (own cgroup namespace, the namespace root limited): the container's file",
			files: v2("0::/\n", "0::/\n", pod), members: cmd, path: "cg/memory.pressure", cgroup: "/", limit: 256 << 20, shared: true},
		{name: "init in a namespace, the command outside it: system-wide",
			files: v2("0::/\n", "0::/../other\n", pod), members: cmd, path: sys, cgroup: "/", limit: 256 << 20},
		{name: "hybrid, v1 unlimited", files: hybrid("4:memory:/process_api/x\n0::/\n", "4:memory:/process_api/x\n0::/\n", map[string]string{
			"cg/unified/memory.pressure":                    pressureIdle,
			"cg/memory/process_api/memory.limit_in_bytes":   unlimited,
			"cg/memory/process_api/x/memory.limit_in_bytes": unlimited,
		}), members: cmd, path: sys},
		{name: "hybrid, init, v1 limited with a unified twin",
			files:   hybrid("9:name=systemd:/system.slice/sup.service\n4:memory:/system.slice/sup.service\n"+sup, "4:memory:/system.slice/sup.service\n"+sup, twin),
			members: cmd, path: "cg/unified/system.slice/sup.service/memory.pressure", cgroup: supGroup, limit: 2 << 30, shared: true},
		{name: "hybrid, run, v1 limited with a unified twin: system-wide",
			files: hybrid("4:memory:/system.slice/sup.service\n"+sup, "", twin), path: sys, cgroup: supGroup, limit: 2 << 30},
		{name: "hybrid, init, v1 limited without a unified twin", files: hybrid("4:memory:/docker/abc\n0::/\n", "4:memory:/docker/abc\n0::/\n", map[string]string{
			"cg/memory/docker/memory.limit_in_bytes":     unlimited,
			"cg/memory/docker/abc/memory.limit_in_bytes": "536870912\n",
		}), members: cmd, path: sys, cgroup: "/docker/abc", limit: 512 << 20},
		{name: "no cgroups at all", files: map[string]string{
			"proc/pressure/memory": pressureIdle,
		}, members: cmd, path: sys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.files {
				if v == "" && strings.HasSuffix(k, "/cgroup") {
					delete(tc.files, k) // the process is gone
				}
			}
			root := tree(t, tc.files)
			loc, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"), tc.members)
			if err != nil {
				t.Fatal(err)
			}
			if loc.Path != filepath.Join(root, tc.path) || loc.Cgroup != tc.cgroup || loc.Limit != tc.limit || loc.Shared != tc.shared || loc.Why == "" {
				t.Fatalf("Locate = %+v; want path %s, cgroup %q, limit %d, shared %v", loc, tc.path, tc.cgroup, tc.limit, tc.shared)
			}
			t.Log(loc.Why)
		})
	}
}

// TestLocateLimitWithoutPressure: init shares a v2 limit whose group has no
// memory.pressure (a kernel with PSI for the system only): an error, not a
// silent fallback that would watch the wrong thing.
func TestLocateLimitWithoutPressure(t *testing.T) {
	root := tree(t, map[string]string{
		"proc/self/cgroup":      "0::/c\n",
		"proc/100/cgroup":       "0::/c\n",
		"proc/pressure/memory":  pressureIdle,
		"cg/cgroup.controllers": "memory\n",
		"cg/c/memory.max":       "1048576\n",
	})
	if _, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"), []int{100}); !errors.Is(err, ErrNoPSI) {
		t.Fatalf("Locate = %v; want ErrNoPSI", err)
	}
}

func TestLocateAt(t *testing.T) {
	root := tree(t, map[string]string{"x/memory.pressure": pressureIdle, "y/garbage": "nope\n"})
	loc, err := At(filepath.Join(root, "x/memory.pressure"))
	if err != nil || loc.Path != filepath.Join(root, "x/memory.pressure") || loc.Why != "--pressure-file" {
		t.Fatalf("At = %+v, %v", loc, err)
	}
	if _, err := At(filepath.Join(root, "y/garbage")); !errors.Is(err, ErrFormat) {
		t.Fatalf("At on a non-pressure file = %v; want ErrFormat", err)
	}
	if _, err := At(filepath.Join(root, "none")); !errors.Is(err, ErrNoPSI) {
		t.Fatalf("At on a missing file = %v; want ErrNoPSI", err)
	}
}

func TestLocateNoPSI(t *testing.T) {
	root := tree(t, map[string]string{"proc/self/cgroup": "0::/\n", "cg/cgroup.controllers": ""})
	_, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"), nil)
	if !errors.Is(err, ErrNoPSI) || !strings.Contains(err.Error(), "CONFIG_PSI") {
		t.Fatalf("Locate without /proc/pressure = %v; want ErrNoPSI naming CONFIG_PSI", err)
	}
	root = tree(t, map[string]string{"proc/self/cgroup": "0::/\n", "proc/pressure/memory": "garbage\n"})
	if _, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"), nil); !errors.Is(err, ErrFormat) {
		t.Fatalf("Locate with a garbled file = %v; want ErrFormat", err)
	}
}

func TestParseCgroupFile(t *testing.T) {
	u, m := ParseCgroupFile([]byte("9:name=systemd:/\n4:memory:/process_api/bb\n3:cpu,cpuacct:/x\n0::/\n"))
	if u != "/" || m != "/process_api/bb" {
		t.Fatalf("hybrid: got %q, %q", u, m)
	}
	u, m = ParseCgroupFile([]byte("0::/../../sibling\n"))
	if u != "" || m != "" {
		t.Fatalf("outside the namespace: got %q, %q; want none", u, m)
	}
	u, m = ParseCgroupFile([]byte("garbage\n1:memory\n"))
	if u != "" || m != "" {
		t.Fatalf("garbage: got %q, %q; want none", u, m)
	}
}
