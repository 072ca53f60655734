package main

import (
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// initCgroupNamespaceIno is PROC_CGROUP_INIT_INO (include/linux/proc_ns.h):
// the initial cgroup namespace's fixed inode number.
const initCgroupNamespaceIno = 0xEFFFFFFB

// warnCgroupNamespace warns when the daemon runs in a private cgroup
// namespace (the default of Docker and Podman on cgroup v2): the kernel
// then shows every other process's cgroup relative to the daemon's own
// ("/../../system.slice/docker-<id>.scope", cgroup_namespaces(7)), so
// --under cgroup:GLOB globs, written for host paths, would match nothing
// and the cgroup column would hold relative paths. Container IDs and pod
// UIDs are still recognised.
func (d *daemon) warnCgroupNamespace() {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/cgroup", &st); err != nil || st.Ino == initCgroupNamespaceIno {
		return // no cgroup namespaces (before Linux 4.6), or the host's
	}
	cgroupUnder := false
	for _, u := range d.cfg.Under {
		cgroupUnder = cgroupUnder || u.Cgroup.String() != ""
	}
	msg := "the daemon runs in a private cgroup namespace: cgroup paths are relative to it; run it in the host's (docker run --cgroupns=host)"
	if cgroupUnder {
		d.log.Warn(msg+"; --under cgroup: globs see those relative paths", zap.Stringers("under", d.cfg.Under))
		return
	}
	d.log.Info(msg)
}
