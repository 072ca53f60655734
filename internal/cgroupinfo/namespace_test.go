package cgroupinfo

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// The shapes measured with unshare --cgroup in /sv/a/b/daemon (R, depth 4).
func TestJoin(t *testing.T) {
	const r = "/sv/a/b/daemon"
	for _, tc := range []struct{ root, in, want string }{
		{r, "/", r},              // the daemon's own cgroup
		{r, "/sub", r + "/sub"},  // below it
		{r, "/../../../..", "/"}, // host PID 1 at the root
		{r, "/../../../../init.scope", "/init.scope"},
		{r, "/../../../x/y", "/sv/x/y"},       // a cousin
		{r, "/../../sib", "/sv/a/sib"},        // a sibling of the parent's
		{r, "/..", "/sv/a/b"},                 // the parent itself
		{r, "/../../../../../..", "/"},        // more ".." than R is deep: not above "/"
		{"/", "/x", "/x"},                     // a namespace rooted at the host's root
		{"/", "/../x", "/x"},                  // (cannot happen) still absolute
		{r, "/../a/./b//c/", "/sv/a/b/a/b/c"}, // cleaned
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podX.slice/cri-containerd-A.scope",
			"/../../../kubepods-burstable.slice/kubepods-burstable-podY.slice/cri-containerd-B.scope",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podY.slice/cri-containerd-B.scope"},
	} {
		if got := Join(tc.root, tc.in); got != tc.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tc.root, tc.in, got, tc.want)
		}
	}
}

func TestRelativeUps(t *testing.T) {
	for _, tc := range []struct {
		in  string
		rel bool
		ups int
	}{
		{"/", false, 0},
		{"/x", false, 0},
		{"/..", true, 1},
		{"/../..", true, 2},
		{"/../../../../init.scope", true, 4},
		{"/../x/..", true, 1},
		{"/..x", false, 0}, // a cgroup may be named "..x"
		{"/x/../y", false, 0},
		{"", false, 0},
	} {
		if got := Relative(tc.in); got != tc.rel {
			t.Errorf("Relative(%q) = %v", tc.in, got)
		}
		if got := Ups(tc.in); got != tc.ups {
			t.Errorf("Ups(%q) = %d, want %d", tc.in, got, tc.ups)
		}
	}
}

// Parsed in a namespace, resolved: the full path names what the relative
// one could not (a cgroupfs-driver pod needs its kubepods component).
func TestInfoIn(t *testing.T) {
	const r = "/kubepods/besteffort/pod" + uid + "/" + id2 // the daemon's container
	for _, tc := range []struct {
		name, root string
		in         []byte
		want       Info
	}{
		{"sibling pod, cgroupfs driver", r, []byte("0::/../../../burstable/pod" + uid + "/" + id1 + "\n"),
			Info{Path: "/kubepods/burstable/pod" + uid + "/" + id1, ContainerID: id1, PodUID: uid}},
		{"the daemon's own container", r, []byte("0::/\n"),
			Info{Path: r, ContainerID: id2, PodUID: uid}},
		{"docker on the same host", r, []byte("0::/../../../../../system.slice/docker-" + id1 + ".scope\n"),
			Info{Path: "/system.slice/docker-" + id1 + ".scope", ContainerID: id1}},
		// Unresolved, the bare ID and pod<uid> lack their kubepods context.
		{"root unknown: as read", "", []byte("0::/../../../burstable/pod" + uid + "/" + id1 + "\n"),
			Info{Path: "/../../../burstable/pod" + uid + "/" + id1}},
		{"v1-only names kept", "/x", []byte(hybrid("/../y", "/docker/"+id1)),
			Info{Path: "/y", ContainerID: id1}},
		{"no v2 line: nothing to join", "/x", []byte("1:name=systemd:/docker/" + id1 + "\n"),
			Info{ContainerID: id1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := i.In(tc.root); got != tc.want {
				t.Errorf("In(%q)\n got %+v\nwant %+v", tc.root, got, tc.want)
			}
		})
	}
}

func TestNamespaceResolve(t *testing.T) {
	rel := Info{Path: "/../../x", ContainerID: id1}
	var nilNS *Namespace
	if got := nilNS.Resolve(rel); got != rel {
		t.Errorf("nil namespace changed %+v to %+v", rel, got)
	}
	var ns Namespace
	if got := ns.Resolve(rel); got != rel {
		t.Errorf("unset namespace changed %+v to %+v", rel, got)
	}
	ns.Set(NamespaceState{Private: true, Err: os.ErrNotExist})
	if got := ns.Resolve(rel); got != rel {
		t.Errorf("unresolved namespace changed %+v to %+v", rel, got)
	}
	g, _ := ParseGlob("*")
	if g.Match(rel.Path) {
		t.Errorf("%q matched a relative path", g)
	}
	ns.Set(NamespaceState{Private: true, Root: "/a/b/c"})
	if got := ns.Resolve(rel); got.Path != "/a/x" || !g.Match(got.Path) {
		t.Errorf("resolved %+v: want /a/x, matched by *", got)
	}
	if got := ns.Resolve(Info{Path: "/"}); got.Path != "/a/b/c" {
		t.Errorf("the namespace's own root resolved to %q", got.Path)
	}
}

func FuzzJoin(f *testing.F) {
	f.Add("/sv/a/b/daemon", "/../../../x/y")
	f.Add("/", "/../../..")
	f.Add("/a", "/..//./../b/")
	f.Fuzz(func(t *testing.T, root, p string) {
		got := Join(root, p)
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("Join(%q, %q) = %q: relative", root, p, got)
		}
		if path.Clean(got) != got {
			t.Fatalf("Join(%q, %q) = %q: not clean", root, p, got)
		}
		if Relative(got) || got == ".." || strings.Contains("/"+got+"/", "/../") {
			t.Fatalf("Join(%q, %q) = %q: climbs above /", root, p, got)
		}
	})
}

// The breadth-first search over a tree shaped like the host's: cgroup.procs
// files listing PIDs, the daemon's at depth 4.
func TestSearch(t *testing.T) {
	host := t.TempDir()
	write := func(rel, procs string) {
		dir := filepath.Join(host, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(procs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(".", "1\n4242\n") // a stale root listing must not be read: from > 0
	write("init.scope", "1\n")
	write("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podX.slice/cri-containerd-A.scope", "42420\n14242\n")
	write("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podY.slice/cri-containerd-B.scope", "7\n4242\n")
	got, dirs, err := search(host, 4, 4242)
	want := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podY.slice/cri-containerd-B.scope"
	if err != nil || got != want {
		t.Fatalf("search = %q, %v; want %q", got, err, want)
	}
	if dirs > 8 {
		t.Errorf("%d directories looked at, want at most the 8 there are", dirs)
	}
	if _, _, err := search(host, 4, 999); err == nil {
		t.Error("found a PID no cgroup lists")
	}
	if got, _, _ := search(host, 0, 4242); got != "/" {
		t.Errorf("from depth 0: %q, want the root", got)
	}
}
