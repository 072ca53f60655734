// Package cgroupinfo says where a process runs from the contents of its
// /proc/PID/cgroup: its cgroup v2 path, the container that path names (if
// any) and the Kubernetes pod (if any). It parses and matches; reading the
// file is the caller's (tracker.ProcFS). The one thing it reads itself is
// the host's cgroup hierarchy, once, to find where a private cgroup
// namespace's root lies (FindRoot, namespace_linux.go).
//
// /proc/PID/cgroup (cgroups(7)) has one line per hierarchy,
// "hierarchy-ID:controller-list:path". The cgroup v2 line is "0::path"; on
// a hybrid host (v1 controllers plus the unified hierarchy mounted at
// /sys/fs/cgroup/unified) it is the unified hierarchy's. Paths are
// relative to the reader's cgroup namespace root: a daemon in a private
// cgroup namespace sees other containers as "/../../…". Namespace turns
// them into host paths once the root's host path is known (namespace.go);
// until then a relative path matches no Glob.
//
// Container runtimes name a container's cgroup after its ID, a 64-digit
// lowercase hex string:
//
//	Docker (systemd driver)          …/docker-<id>.scope
//	Docker (cgroupfs driver)         /docker/<id>
//	containerd CRI (systemd)         …/cri-containerd-<id>.scope
//	CRI-O                            …/crio-<id>.scope (cgroupfs: crio-<id>)
//	Podman                           …/libpod-<id>.scope (cgroupfs: libpod-<id>)
//	kubelet cgroupfs driver          /kubepods/<qos>/pod<uid>/<id>
//
// The conmon scopes of CRI-O and Podman (crio-conmon-<id>.scope,
// libpod-conmon-<id>.scope) hold the container's monitor, not the
// container: they name no container. Neither does an ID that is not exactly
// 64 hex digits (a shortened or partial one): better no attribution than a
// wrong one. When several components name a container (Docker in Docker,
// kind nodes), the innermost — the one the process runs in — wins.
//
// The kubelet names a pod's cgroup after the pod's UID:
// kubepods-<qos>-pod<uid>.slice (systemd driver, the UID's dashes written as
// underscores, which systemd reserves for the slice hierarchy; guaranteed
// pods: kubepods-pod<uid>.slice) or /kubepods/<qos>/pod<uid> (cgroupfs
// driver; guaranteed pods: /kubepods/pod<uid>). A UID is a UUID, or, for a
// static pod, 32 hex digits (the kubelet's hash of its manifest).
//
// When the v2 path names neither (a hybrid host whose runtime uses the
// cgroupfs driver creates v1 cgroups only), the v1 lines are searched, the
// name=systemd line first; Path stays the v2 path.
package cgroupinfo
