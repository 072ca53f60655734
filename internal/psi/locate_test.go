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
	const unlimited = "9223372036854771712\n"
	for _, tc := range []struct {
		name   string
		files  map[string]string
		path   string // relative to the tree
		cgroup string
		limit  int64
	}{
		{name: "pure v2, unlimited", files: map[string]string{
			"proc/self/cgroup":                            "0::/system.slice/sup.service\n",
			"proc/pressure/memory":                        pressureIdle,
			"cg/cgroup.controllers":                       "cpu memory pids\n",
			"cg/system.slice/memory.max":                  "max\n",
			"cg/system.slice/sup.service/memory.max":      "max\n",
			"cg/system.slice/sup.service/memory.pressure": pressureIdle,
		}, path: "proc/pressure/memory"},
		{name: "pure v2, own group limited", files: map[string]string{
			"proc/self/cgroup":                            "0::/system.slice/sup.service\n",
			"proc/pressure/memory":                        pressureIdle,
			"cg/cgroup.controllers":                       "cpu memory pids\n",
			"cg/system.slice/memory.max":                  "max\n",
			"cg/system.slice/sup.service/memory.max":      "1073741824\n",
			"cg/system.slice/sup.service/memory.pressure": pressureIdle,
		}, path: "cg/system.slice/sup.service/memory.pressure", cgroup: "/system.slice/sup.service", limit: 1 << 30},
		{name: "pure v2, ancestor limited: its file, which counts the agents beside us", files: map[string]string{
			"proc/self/cgroup":              "0::/box/daemon\n",
			"proc/pressure/memory":          pressureIdle,
			"cg/cgroup.controllers":         "memory\n",
			"cg/box/memory.max":             "8589934592\n",
			"cg/box/memory.pressure":        pressureIdle,
			"cg/box/daemon/memory.max":      "max\n",
			"cg/box/daemon/memory.pressure": pressureIdle,
		}, path: "cg/box/memory.pressure", cgroup: "/box", limit: 8 << 30},
		{name: "pure v2, in the root group (which has no memory.max)", files: map[string]string{
			"proc/self/cgroup":      "0::/\n",
			"proc/pressure/memory":  pressureIdle,
			"cg/cgroup.controllers": "memory\n",
		}, path: "proc/pressure/memory"},
		{name: "container with its own cgroup namespace: the namespace root is the limited group", files: map[string]string{
			"proc/self/cgroup":      "0::/\n",
			"proc/pressure/memory":  pressureIdle,
			"cg/cgroup.controllers": "memory\n",
			"cg/memory.max":         "4294967296\n",
			"cg/memory.pressure":    pressureIdle,
		}, path: "cg/memory.pressure", cgroup: "/", limit: 4 << 30},
		{name: "hybrid, v1 unlimited", files: map[string]string{
			"proc/self/cgroup":                              "4:memory:/process_api/x\n0::/\n",
			"proc/pressure/memory":                          pressureIdle,
			"cg/unified/cgroup.controllers":                 "",
			"cg/unified/memory.pressure":                    pressureIdle,
			"cg/memory/memory.limit_in_bytes":               unlimited,
			"cg/memory/process_api/memory.limit_in_bytes":   unlimited,
			"cg/memory/process_api/x/memory.limit_in_bytes": unlimited,
		}, path: "proc/pressure/memory"},
		{name: "hybrid, v1 limited with a unified twin", files: map[string]string{
			"proc/self/cgroup":                                         "9:name=systemd:/system.slice/sup.service\n4:memory:/system.slice/sup.service\n0::/system.slice/sup.service\n",
			"proc/pressure/memory":                                     pressureIdle,
			"cg/unified/cgroup.controllers":                            "",
			"cg/unified/system.slice/sup.service/memory.pressure":      pressureIdle,
			"cg/memory/memory.limit_in_bytes":                          unlimited,
			"cg/memory/system.slice/memory.limit_in_bytes":             unlimited,
			"cg/memory/system.slice/sup.service/memory.limit_in_bytes": "2147483648\n",
		}, path: "cg/unified/system.slice/sup.service/memory.pressure", cgroup: "/system.slice/sup.service", limit: 2 << 30},
		{name: "hybrid, v1 limited without a unified twin", files: map[string]string{
			"proc/self/cgroup":                           "4:memory:/docker/abc\n0::/\n",
			"proc/pressure/memory":                       pressureIdle,
			"cg/unified/cgroup.controllers":              "",
			"cg/memory/memory.limit_in_bytes":            unlimited,
			"cg/memory/docker/memory.limit_in_bytes":     unlimited,
			"cg/memory/docker/abc/memory.limit_in_bytes": "536870912\n",
		}, path: "proc/pressure/memory", cgroup: "/docker/abc", limit: 512 << 20},
		{name: "no cgroups at all", files: map[string]string{
			"proc/pressure/memory": pressureIdle,
		}, path: "proc/pressure/memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tree(t, tc.files)
			loc, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"))
			if err != nil {
				t.Fatal(err)
			}
			if loc.Path != filepath.Join(root, tc.path) || loc.Cgroup != tc.cgroup || loc.Limit != tc.limit || loc.Why == "" {
				t.Fatalf("Locate = %+v; want path %s, cgroup %q, limit %d", loc, tc.path, tc.cgroup, tc.limit)
			}
		})
	}
}

func TestLocateNoPSI(t *testing.T) {
	root := tree(t, map[string]string{"proc/self/cgroup": "0::/\n", "cg/cgroup.controllers": ""})
	_, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg"))
	if !errors.Is(err, ErrNoPSI) || !strings.Contains(err.Error(), "CONFIG_PSI") {
		t.Fatalf("Locate without /proc/pressure = %v; want ErrNoPSI naming CONFIG_PSI", err)
	}
	root = tree(t, map[string]string{"proc/self/cgroup": "0::/\n", "proc/pressure/memory": "garbage\n"})
	if _, err := Locate(filepath.Join(root, "proc"), filepath.Join(root, "cg")); !errors.Is(err, ErrFormat) {
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
