package tracker

import (
	"io/fs"
	"strconv"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"golang.org/x/sys/unix"
)

// Attribution: where an agent runs (cgroupinfo: its cgroup v2 path, the
// container and the Kubernetes pod that path names).
//
// When. /proc/PID/cgroup is read when a process matches an agent rule
// (matchLocked, at its exec or comm change), when a session member is
// queued as a leftover, for a manual kill's processes, and again for every
// queued agent and leftover on a resync. A process changes cgroup only by
// a write of its PID to a cgroup.procs file (or clone3's CLONE_INTO_CGROUP
// at birth; a plain fork inherits its parent's, kernel/cgroup/cgroup.c
// cgroup_post_fork), and container runtimes do that before they exec the
// container's command (runc's init joins the cgroup, then execve), which is
// the exec or rename at which an agent is matched. Reading at the match
// sees the final cgroup; reading at fork would see the runtime's.
//
// Members. A session member's attribution is shown and recorded only when
// it becomes a leftover (its own row in tel.agent_kills, its line under
// /agents), so it is read then, not at fork or exec: the thousands of
// short-lived git and sh a session forks cost nothing, and the row names
// the cgroup the process is in when it is about to be killed (a member can
// move: podman run from an agent's shell puts the container's process in
// its libpod scope). Inheriting the parent's at fork would be free but
// wrong for such a member; re-reading at every member's exec would cost a
// read per exec for information nobody asks for.
//
// Cost. One read is an open, a read and a close of a small file (the
// kernel builds it under css_set_lock, kernel/cgroup/cgroup.c
// proc_cgroup_show) plus the parse: 18–29 µs per process measured here
// (BenchmarkProcFSCgroup, a 2-core VM shared with other work, hybrid host,
// 10 lines), in line with the /proc/PID/stat (15 µs) and cmdline (21 µs)
// reads the table already makes for each agent. It happens under the
// table's lock, once per agent, leftover and manual kill, and per queued
// one on a resync.
//
// Scope. A cgroup ancestor (--under cgroup:GLOB) is checked against the
// path read at the match, so only processes that match an agent rule are
// read, never every fork. Like the other ancestors it is decided when a
// process becomes an agent.
//
// Namespaces. In a private cgroup namespace (the DaemonSet's container)
// the kernel shows paths relative to the namespace's root; Cgroup joins
// them onto its host path (SetCgroupNamespace, cgroupinfo.FindRoot), a
// string join per read. While that root is unknown the relative path is
// kept and matches no glob.

// cgroupBuf is the first size tried: a hybrid host's file is under 1 KiB.
const cgroupBuf = 4096

// Cgroup reads and parses /proc/PID/cgroup.
func (p *ProcFS) Cgroup(pid int32) (cgroupinfo.Info, error) {
	path := p.root + "/" + strconv.Itoa(int(pid)) + "/cgroup"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return cgroupinfo.Info{}, gone(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	buf := make([]byte, cgroupBuf)
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return cgroupinfo.Info{}, gone(&fs.PathError{Op: "read", Path: path, Err: err})
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n == 0 {
		// A zombie's (or an exiting process's) file is empty.
		return cgroupinfo.Info{}, gone(&fs.PathError{Op: "read", Path: path, Err: unix.ESRCH})
	}
	info, err := cgroupinfo.Parse(buf[:n])
	if err != nil {
		return info, err
	}
	return p.cgns.Resolve(info), nil
}

// SetCgroupNamespace makes Cgroup return host paths when the daemon runs
// in a private cgroup namespace (cgroupinfo.FindRoot): every path read is
// joined onto the namespace root's host path, so /agents, kill rows,
// events and --under cgroup: all see host paths. Set it before the first
// read; ns is consulted (atomically) at each read.
func (p *ProcFS) SetCgroupNamespace(ns *cgroupinfo.Namespace) { p.cgns = ns }

// CgroupNamespace returns what SetCgroupNamespace set (nil: the host's).
func (p *ProcFS) CgroupNamespace() *cgroupinfo.Namespace { return p.cgns }

// cgroupOf reads p's cgroup; unknown (zero) when the read fails, which
// errs is told of. Under the table's lock.
func cgroupOf(proc ProcReader, errs readErrs, p *Proc) cgroupinfo.Info {
	info, err := proc.Cgroup(p.PID)
	if err != nil {
		errs.procErr(p.PID, err)
		return cgroupinfo.Info{}
	}
	return info
}

// refreshCgroupsLocked reads the cgroup of every queued agent and leftover
// among procs again, on a resync: events were lost, so whatever moved
// meanwhile is learnt here.
func refreshCgroupsLocked(procs map[int32]*Proc, proc ProcReader, errs readErrs, q *Deadlines) {
	for _, p := range procs {
		a := p.agent
		if a == nil {
			continue
		}
		info, err := proc.Cgroup(p.PID)
		if err != nil {
			errs.procErr(p.PID, err)
			continue
		}
		if q.SetCgroup(a, info) {
			if s := p.session; s != nil && s.agent == p {
				s.Cgroup = info
			}
		}
	}
}
