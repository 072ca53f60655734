package daemon

import (
	"os"

	"go.uber.org/zap"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

// warnCgroupNamespace says at start whether the daemon runs in a private
// cgroup namespace (containerd, CRI-O, and Docker and Podman on cgroup v2,
// give every non-privileged container one) and, if so, whether the host
// path of its root was found (cgns.go): the kernel shows every other
// process's cgroup relative to that root ("/../../system.slice/docker-<id>.scope",
// cgroup_namespaces(7)). Found, every path is turned into the host's;
// not found, paths stay relative, a relative path matches no --under
// cgroup: glob (the daemon reaps nothing by cgroup: the safe failure), and
// the warning names why and what to mount. Container IDs and pod UIDs are
// still recognised in relative paths (but not the cgroupfs driver's bare
// IDs, which need the kubepods component above them).
func (d *daemon) warnCgroupNamespace() {
	d.warnNoUnified()
	s := d.procs.CgroupNamespace().State()
	if !s.Private {
		return
	}
	if s.Root != "" {
		d.log.Info("the daemon runs in a private cgroup namespace; its root was found on the host: cgroup paths are host paths",
			zap.String("namespace_root", s.Root), zap.Int("depth", s.Depth), zap.Int("dirs", s.Dirs), zap.Duration("took", s.Took),
			zap.String("host_cgroup_root", d.cfg.HostCgroupRoot))
		return
	}
	cgroupUnder := false
	for _, u := range d.cfg.Under {
		cgroupUnder = cgroupUnder || u.Cgroup.String() != ""
	}
	msg := "the daemon runs in a private cgroup namespace and could not find its root on the host: cgroup paths stay relative (\"/../..\") and match no --under cgroup: glob; " +
		"mount the host's /sys/fs/cgroup read-only and name it in --host-cgroup-root (REAPER_HOST_CGROUP_ROOT), or run in the host's cgroup namespace (docker run --cgroupns=host)"
	fields := []zap.Field{zap.Error(s.Err), zap.String("host_cgroup_root", d.cfg.HostCgroupRoot)}
	if cgroupUnder {
		d.log.Warn(msg, append(fields, zap.Stringers("under", d.cfg.Under))...)
		return
	}
	d.log.Warn(msg, fields...)
}

// warnNoUnified warns when a --under cgroup: glob is set on a host whose
// processes have no cgroup v2 path (no "0::" line in /proc/1/cgroup: a
// cgroup v1 only host): the glob matches the v2 path only, so it would
// scope in nothing, silently.
func (d *daemon) warnNoUnified() {
	var globs []string
	for _, u := range d.cfg.Under {
		if g := u.Cgroup.String(); g != "" {
			globs = append(globs, g)
		}
	}
	if len(globs) == 0 {
		return
	}
	b, err := os.ReadFile("/proc/1/cgroup")
	if err != nil {
		return
	}
	if info, err := cgroupinfo.Parse(b); err == nil && info.Path == "" {
		d.log.Warn("--under cgroup: globs match cgroup v2 paths, and this host's processes have none (cgroup v1 only): the globs scope in nothing; scope by agent names or a PID/name ancestor instead",
			zap.Strings("globs", globs))
	}
}
