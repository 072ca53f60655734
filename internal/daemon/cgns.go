package daemon

import (
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/tracker"
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
func warnCgroupNamespace(log *zap.Logger, procs *tracker.ProcFS, cfg *config.Config) {
	warnNoUnified(log, cfg)
	s := procs.CgroupNamespace().State()
	if !s.Private {
		return
	}
	if s.Root != "" {
		log.Info("the daemon runs in a private cgroup namespace; its root was found on the host: cgroup paths are host paths",
			zap.String("namespace_root", s.Root), zap.Int("depth", s.Depth), zap.Int("dirs", s.Dirs), zap.Duration("took", s.Took),
			zap.String("host_cgroup_root", cfg.HostCgroupRoot))
		return
	}
	cgroupUnder := false
	for _, u := range cfg.Under {
		cgroupUnder = cgroupUnder || u.Cgroup.String() != ""
	}
	msg := "the daemon runs in a private cgroup namespace and could not find its root on the host: cgroup paths stay relative (\"/../..\") and match no --under cgroup: glob; " +
		"mount the host's /sys/fs/cgroup read-only and name it in --host-cgroup-root (REAPER_HOST_CGROUP_ROOT), or run in the host's cgroup namespace (docker run --cgroupns=host)"
	fields := []zap.Field{zap.Error(s.Err), zap.String("host_cgroup_root", cfg.HostCgroupRoot)}
	if cgroupUnder {
		log.Warn(msg, append(fields, zap.Stringers("under", cfg.Under))...)
		return
	}
	log.Warn(msg, fields...)
}

// warnNoUnified warns when a --under cgroup: glob is set on a host whose
// processes have no cgroup v2 path (no "0::" line in /proc/1/cgroup: a
// cgroup v1 only host): the glob matches the v2 path only, so it would
// scope in nothing, silently.
func warnNoUnified(log *zap.Logger, cfg *config.Config) {
	var globs []string
	for _, u := range cfg.Under {
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
		log.Warn("--under cgroup: globs match cgroup v2 paths, and this host's processes have none (cgroup v1 only): the globs scope in nothing; scope by agent names or a PID/name ancestor instead",
			zap.Strings("globs", globs))
	}
}

// cgnsRetryEvery bounds how often a resync looks for an unknown namespace
// root again: a failed search may have read every cgroup of the host.
const cgnsRetryEvery = time.Minute

// findCgroupNamespace finds the host path of the daemon's cgroup namespace
// root (cgroupinfo.FindRoot) and makes procs resolve the cgroup paths it
// reads against it. Called before the first /proc scan, so the first
// agents are already attributed (and scoped) by host paths.
func findCgroupNamespace(procs *tracker.ProcFS, cfg *config.Config) {
	ns := &cgroupinfo.Namespace{}
	ns.Set(findRoot(cfg))
	procs.SetCgroupNamespace(ns)
}

func findRoot(cfg *config.Config) cgroupinfo.NamespaceState {
	return cgroupinfo.FindRoot(cgroupinfo.FindConfig{Proc: "/proc", Host: cfg.HostCgroupRoot, PID: os.Getpid()})
}

// retryCgroupNamespace looks for a namespace root not found before (the
// host hierarchy mounted late), at most once a minute, on a resync: the
// resync's merge then reads every queued agent's cgroup again, now
// resolved.
func retryCgroupNamespace(log *zap.Logger, procs *tracker.ProcFS, cfg *config.Config) {
	ns := procs.CgroupNamespace()
	s := ns.State()
	if !s.Private || s.Root != "" || time.Since(s.At) < cgnsRetryEvery {
		return
	}
	n := findRoot(cfg)
	ns.Set(n)
	if n.Root != "" {
		log.Info("cgroup namespace root found: cgroup paths are host paths from now on",
			zap.String("namespace_root", n.Root), zap.Int("depth", n.Depth), zap.Int("dirs", n.Dirs), zap.Duration("took", n.Took))
	}
}
