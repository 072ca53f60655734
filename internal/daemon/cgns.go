package daemon

import (
	"os"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

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
func (d *daemon) retryCgroupNamespace() {
	ns := d.procs.CgroupNamespace()
	s := ns.State()
	if !s.Private || s.Root != "" || time.Since(s.At) < cgnsRetryEvery {
		return
	}
	n := findRoot(d.cfg)
	ns.Set(n)
	if n.Root != "" {
		d.log.Info("cgroup namespace root found: cgroup paths are host paths from now on",
			zap.String("namespace_root", n.Root), zap.Int("depth", n.Depth), zap.Int("dirs", n.Dirs), zap.Duration("took", n.Took))
	}
}
