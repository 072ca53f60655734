package cgroupinfo

import (
	"path"
	"strings"
	"sync/atomic"
	"time"
)

// Cgroup namespaces (cgroup_namespaces(7), Linux 4.6). A process in a
// private cgroup namespace reads every cgroup v2 path in /proc/PID/cgroup
// relative to its namespace's root cgroup R: the kernel prints
// kernfs_path_from_node(cgroup, R) (kernel/cgroup/cgroup.c cgroup_path_ns,
// fs/kernfs/dir.c kernfs_path_from_node), which climbs from R up to the
// common ancestor with one "/.." per level and then names the way down. A
// process in R's subtree reads "/" or "/sub"; a sibling pod's container
// reads "/../../podB/ctrB"; host PID 1 at the root reads d ".." (d = R's
// depth), at /init.scope "/../../../../init.scope". Measured here with
// unshare --cgroup in /sv/a/b/daemon: PID 1 (root) "/../../../..", a
// process in /sv/x/y "/../../../x/y", one in /sv/a/sib "/../../sib".
//
// containerd, CRI-O, and Docker and Podman on cgroup v2, give every
// non-privileged container its own cgroup namespace, so the DaemonSet's
// daemon reads such paths. Joining a path onto R's host path and cleaning
// it gives the host path; R itself never changes (a namespace's root is
// fixed when it is created, kernel/cgroup/namespace.c copy_cgroup_ns), so
// it is looked up once (FindRoot).

// Relative reports whether p, a cgroup v2 path as /proc/PID/cgroup shows
// it, climbs above the reader's cgroup namespace root ("/..", "/../…"). A
// cgroup cannot be named ".." (kernfs refuses it), so such a component is
// always the kernel's.
func Relative(p string) bool { return p == "/.." || strings.HasPrefix(p, "/../") }

// Ups counts p's leading ".." components: how far above the reader's
// namespace root p's common ancestor with it lies.
func Ups(p string) int {
	n := 0
	for p == "/.." || strings.HasPrefix(p, "/../") {
		n++
		p = p[3:]
	}
	return n
}

// Join returns the host path of p, a cgroup v2 path read in a cgroup
// namespace whose root has the host path root. The result is absolute and
// clean: path.Clean drops a ".." at "/", so it never climbs above the
// host's root, whatever the input.
func Join(root, p string) string {
	return path.Clean("/" + root + "/" + p)
}

// In returns i with its path resolved in a namespace rooted at the host
// path root ("" unknown: i unchanged) and the container and pod read again
// from the full path: a relative path may have lost the kubepods component
// a pod's cgroupfs-driver name needs ("/../../pod<uid>/<id>").
func (i Info) In(root string) Info {
	if root == "" || i.Path == "" {
		return i
	}
	out := Info{Path: Join(root, i.Path)}
	out.ContainerID, out.PodUID = names(out.Path)
	if out.ContainerID == "" && out.PodUID == "" {
		out.ContainerID, out.PodUID = i.ContainerID, i.PodUID // from the v1 lines
	}
	return out
}

// Namespace maps paths read in the daemon's cgroup namespace to host
// paths. The zero value (and a nil one) is the host's namespace: paths
// unchanged. Safe for concurrent use.
type Namespace struct {
	st atomic.Pointer[NamespaceState]
}

// NamespaceState is what is known about the daemon's cgroup namespace.
type NamespaceState struct {
	// Private: the daemon is not in the initial cgroup namespace.
	Private bool
	// Root is the host path of the namespace's root ("/" for the host's
	// namespace); "" when it could not be found, and then Err says why.
	Root string
	Err  error
	// Depth is Root's depth; Dirs the directories looked at to find it.
	Depth, Dirs int
	// At is when it was looked up, Took how long that took.
	At   time.Time
	Took time.Duration
}

// State returns what is known (the host's namespace for a nil or zero
// Namespace).
func (n *Namespace) State() NamespaceState {
	if n == nil {
		return NamespaceState{Root: "/"}
	}
	if s := n.st.Load(); s != nil {
		return *s
	}
	return NamespaceState{Root: "/"}
}

// Set records s.
func (n *Namespace) Set(s NamespaceState) { n.st.Store(&s) }

// Resolve returns i with its path as the host sees it. While the root of
// a private namespace is unknown the path is left as read: a relative one
// then matches no Glob.
func (n *Namespace) Resolve(i Info) Info {
	if n == nil {
		return i
	}
	s := n.st.Load()
	if s == nil || !s.Private {
		return i // the host's namespace: paths are host paths
	}
	return i.In(s.Root)
}
