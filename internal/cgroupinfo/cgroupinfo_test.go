package cgroupinfo

import (
	"errors"
	"strings"
	"testing"
)

const (
	id1  = "3f4e7c0b9b5d2a8e1f6c4d7a9b0e2f1c3d5a7b9c0e2f4a6b8c0d2e4f6a8b0c2d"
	id2  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	uid  = "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8"
	uidU = "8f3a2b1c_4d5e_6f70_8192_a3b4c5d6e7f8" // the systemd driver's spelling
	// static is a static pod's UID: the kubelet's hash of its manifest.
	static = "6c9a37f0e7a2c7d8d5c8b0d2a0b1e5c4"
)

// hybrid is what a hybrid host (v1 controllers + unified) shows: v1 lines,
// then the unified hierarchy's "0::" line.
func hybrid(v2, v1 string) string {
	return "12:pids:" + v1 + "\n11:name=systemd:" + v1 + "\n4:memory:" + v1 + "\n1:cpu,cpuacct:" + v1 + "\n0::" + v2 + "\n"
}

func TestParse(t *testing.T) {
	// The systemd driver's pod slices.
	bestEffort := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice"
	burstable := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice"
	// A pure v2 file, "0::PATH\n": its path is PATH, the container and
	// the pod as PATH names them.
	for _, tc := range []struct{ name, path, id, pod string }{
		{"host process, pure v2", "/system.slice/ssh.service", "", ""},
		{"root cgroup", "/", "", ""},
		{"docker, systemd driver", "/system.slice/docker-" + id1 + ".scope", id1, ""},
		{"docker, cgroupfs driver", "/docker/" + id1, id1, ""},
		{"podman", "/machine.slice/libpod-" + id1 + ".scope", id1, ""},
		{"podman, container subgroup", "/machine.slice/libpod-" + id1 + ".scope/container", id1, ""},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope", id1, ""},
		{"podman conmon is not the container", "/machine.slice/libpod-conmon-" + id1 + ".scope", "", ""},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id1, id1, ""},
		{"k8s containerd, systemd driver, besteffort", bestEffort + "/cri-containerd-" + id1 + ".scope", id1, uid},
		{"k8s containerd, systemd driver, burstable", burstable + "/cri-containerd-" + id1 + ".scope", id1, uid},
		{"k8s guaranteed, systemd driver", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope", id1, uid},
		{"k8s pod slice itself (the pause sandbox's parent)", bestEffort, "", uid},
		{"k8s cri-o, systemd driver", burstable + "/crio-" + id1 + ".scope", id1, uid},
		{"k8s cri-o conmon is not the container", burstable + "/crio-conmon-" + id1 + ".scope", "", uid},
		{"k8s cgroupfs driver, burstable", "/kubepods/burstable/pod" + uid + "/" + id1, id1, uid},
		{"k8s cgroupfs driver, guaranteed", "/kubepods/pod" + uid + "/" + id1, id1, uid},
		{"k8s cgroupfs driver, cri-o", "/kubepods/besteffort/pod" + uid + "/crio-" + id1, id1, uid},
		{"k8s static pod (hash UID)", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + id1 + ".scope", id1, static},
		{"kind node: a pod inside a docker container, innermost wins", "/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope", id1, uid},
		{"a component merely containing kubepods is no pod parent", "/user.slice/user-1000.slice/my-kubepods-x/pod" + uid, "", ""},
		{"docker in docker", "/docker/" + id2 + "/docker/" + id1, id1, ""},
		{"short id is not an id", "/system.slice/docker-3f4e7c0b9b5d.scope", "", ""},
		{"uppercase hex is not an id", "/system.slice/docker-" + strings.ToUpper(id1) + ".scope", "", ""},
		{"docker.service is not a container", "/system.slice/docker.service", "", ""},
		{"bare hex outside a pod or /docker is not an id", "/default/" + id1, "", ""},
		{"pod<uid> outside kubepods is not a pod", "/user.slice/pod" + uid, "", ""},
		{"bad uid", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podnotauid.slice", "", ""},
		{"cgroup namespace view", "/../../system.slice/docker-" + id1 + ".scope", id1, ""},
		{"path with a colon", "/user.slice/a:b", "", ""},
	} {
		parses(t, tc.name, []byte("0::"+tc.path+"\n"), Info{Path: tc.path, ContainerID: tc.id, PodUID: tc.pod})
	}
	// Hybrid and v1 hosts, and lines that are not plain.
	for _, tc := range []struct {
		name string
		in   []byte
		want Info
	}{
		{"docker, hybrid host", []byte(hybrid("/system.slice/docker-"+id1+".scope", "/system.slice/docker-"+id1+".scope")),
			Info{Path: "/system.slice/docker-" + id1 + ".scope", ContainerID: id1}},
		{"docker cgroupfs on a hybrid host: v1 only names it", []byte(hybrid("/system.slice/containerd.service", "/docker/"+id1)),
			Info{Path: "/system.slice/containerd.service", ContainerID: id1}},
		{"v1-only host", []byte("5:cpuset:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n"),
			Info{ContainerID: id1}},
		{"an exiting task of a removed cgroup: \" (deleted)\" dropped",
			[]byte("0::/system.slice/docker-" + id1 + ".scope (deleted)\n"),
			Info{Path: "/system.slice/docker-" + id1 + ".scope", ContainerID: id1}},
		{"no final newline", []byte("0::/docker/" + id1), Info{Path: "/docker/" + id1, ContainerID: id1}},
	} {
		parses(t, tc.name, tc.in, tc.want)
	}
}

// parses runs a subtest that wants Parse(in) to be want.
func parses(t *testing.T, name string, in []byte, want Info) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if got != want {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", in, got, want)
		}
	})
}

func TestParseErrors(t *testing.T) {
	for _, in := range [][]byte{
		nil,
		[]byte("\n"),
		[]byte("garbage"),
		[]byte("0:/x\n"),
		[]byte("x::/y\n"),
		[]byte("0::\n"),
		[]byte("::/y\n"),
	} {
		if got, err := Parse(in); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrFormat", in, got, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(hybrid("/system.slice/docker-"+id1+".scope", "/")))
	f.Add([]byte("0::/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope\n"))
	f.Add([]byte("0::/kubepods/besteffort/pod" + uid + "/" + id1 + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) || !info.IsZero() {
				t.Fatalf("Parse(%q) = %+v, %v", b, info, err)
			}
			return
		}
		if info.ContainerID != "" && !hex64(info.ContainerID) {
			t.Fatalf("Parse(%q): container id %q", b, info.ContainerID)
		}
		if info.PodUID != "" && !validUID(info.PodUID) {
			t.Fatalf("Parse(%q): pod uid %q", b, info.PodUID)
		}
		if info.Path != "" && !strings.Contains(string(b), "0::"+info.Path) {
			t.Fatalf("Parse(%q): path %q is not the 0:: line's", b, info.Path)
		}
	})
}

func TestGlob(t *testing.T) {
	pod := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope"
	docker := "/system.slice/docker-" + id1 + ".scope"
	for _, tc := range []struct {
		glob, path string
		want       bool
	}{
		{"/kubepods*", pod, true},
		{"/kubepods*", "/kubepods/burstable/pod" + uid + "/" + id1, true},
		{"/kubepods*", docker, false},
		{"/kubepods*", "/system.slice/kubepods.slice", false}, // anchored at the start
		{"*", "/", true},
		{"*", "", true},
		{"/", "/", true},
		{"/", "/x", false},
		{"/system.slice/docker-*.scope", docker, true},
		{"/system.slice/docker-*.scope", docker + "/init", false}, // anchored at the end
		{"*/docker-*.scope", docker, true},
		{"*docker*", docker, true},
		{"*cri-containerd-*", pod, true},
		{"/a*b*c", "/abc", true},
		{"/a*b*c", "/axxbyybzc", true},
		{"/a*b*c", "/axxyyc", false},
		{"/a*a", "/a", false}, // the prefix and suffix may not overlap
		{"/a*a", "/aa", true},
		{"/a**b", "/a/x/b", true},
		{"/a?b", "/a?b", true}, // '?' is literal
		{"/a?b", "/axb", false},
		{"/a[b]", "/a[b]", true}, // so is '['
	} {
		g, err := ParseGlob(tc.glob)
		if err != nil {
			t.Fatalf("ParseGlob(%q): %v", tc.glob, err)
		}
		if got := g.Match(tc.path); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.glob, tc.path, got, tc.want)
		}
	}
	for _, bad := range []string{"", "kubepods*", "docker-*.scope", "/a\nb", "/a\x00"} {
		if _, err := ParseGlob(bad); err == nil {
			t.Errorf("ParseGlob(%q) accepted", bad)
		}
	}
	if (Glob{}).Match("/") {
		t.Error("the zero Glob matched")
	}
}

// matchRef is the obvious recursive matcher, to check Match against.
func matchRef(p, s string) bool {
	if p == "" {
		return s == ""
	}
	if p[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if matchRef(p[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	return s != "" && s[0] == p[0] && matchRef(p[1:], s[1:])
}

func FuzzGlob(f *testing.F) {
	f.Add("/a*b*c", "/axxbyybzc")
	f.Add("/*a*", "/aaa")
	f.Fuzz(func(t *testing.T, glob, path string) {
		if len(glob) > 32 || len(path) > 64 {
			return
		}
		g, err := ParseGlob(glob)
		if err != nil {
			return
		}
		// A relative path matches nothing (namespace.go).
		if got, want := g.Match(path), matchRef(glob, path) && !Relative(path); got != want {
			t.Fatalf("%q.Match(%q) = %v, reference says %v", glob, path, got, want)
		}
	})
}
