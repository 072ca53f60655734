package cgroupinfo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// initCgroupNamespaceIno is PROC_CGROUP_INIT_INO (include/linux/proc_ns.h):
// the initial cgroup namespace's fixed inode number.
const initCgroupNamespaceIno = 0xEFFFFFFB

// maxSearchDirs bounds the search for the namespace root: a Kubernetes node
// has a few thousand cgroups; this many means something else is wrong.
const maxSearchDirs = 1 << 16

// ErrNoHostHierarchy says the host's cgroup v2 hierarchy could not be read:
// the daemon needs it mounted (or /proc/1/root readable) to name its own
// namespace's root.
var ErrNoHostHierarchy = errors.New("host cgroup v2 hierarchy not readable")

// FindConfig says where FindRoot looks.
type FindConfig struct {
	// Proc is the procfs mount, "/proc".
	Proc string
	// Host is a directory where the host's cgroup v2 hierarchy (or the
	// cgroup directory of a hybrid host, with the hierarchy at unified/)
	// is mounted. "" tries Proc/1/root/sys/fs/cgroup: host PID 1's
	// mounts, readable with hostPID and CAP_SYS_PTRACE (an AppArmor
	// profile may still refuse it).
	Host string
	// PID is the daemon's PID as Proc shows it (cgroup.procs lists PIDs
	// as the reader's PID namespace sees them).
	PID int
}

// FindRoot finds the host path of the root of the daemon's cgroup
// namespace.
//
// The daemon is in a private namespace when /proc/self/ns/cgroup is not
// the initial one. Its own path ("0::/" right after the runtime's unshare)
// is below the root by its own depth; host PID 1's path (hostPID: the
// host's init) climbs k levels, k = depth(R) - depth(common ancestor), so
// k is a lower bound of R's depth, and equals it when PID 1 sits at the
// root or in a top-level cgroup (/init.scope), as systemd and other inits
// do. The host hierarchy is then searched breadth-first: directories
// above depth k + depth(own) are only listed, those at and below it have
// their cgroup.procs read until one lists the daemon's PID. That is the
// daemon's cgroup, whatever k says: the answer does not rest on the
// assumption, which only makes it cheap (the first level read is the
// right one: O(directories at depth ≤ d), once). Cross-checked: PID 1's
// path joined onto the answer must exist in the host hierarchy.
func FindRoot(cfg FindConfig) NamespaceState {
	var st unix.Stat_t
	if err := unix.Stat(cfg.Proc+"/self/ns/cgroup", &st); err != nil || st.Ino == initCgroupNamespaceIno {
		return NamespaceState{Root: "/"} // no cgroup namespaces (before Linux 4.6), or the host's
	}
	s := NamespaceState{Private: true, At: time.Now()}
	s.Root, s.Depth, s.Dirs, s.Err = findRoot(cfg)
	s.Took = time.Since(s.At)
	return s
}

func findRoot(cfg FindConfig) (root string, depth, dirs int, err error) {
	own, err := readV2(cfg.Proc + "/self/cgroup")
	if err != nil {
		return "", 0, 0, err
	}
	if Relative(own) {
		return "", 0, 0, fmt.Errorf("the daemon's own cgroup %q lies outside its cgroup namespace: it was moved after the namespace was made", own)
	}
	pid1, err := readV2(cfg.Proc + "/1/cgroup")
	if err != nil {
		return "", 0, 0, err
	}
	host, err := hostHierarchy(cfg)
	if err != nil {
		return "", 0, 0, err
	}
	ownComps := components(own)
	found, dirs, err := search(host, Ups(pid1)+len(ownComps), cfg.PID)
	if err != nil {
		return "", 0, dirs, err
	}
	// found is R + own.
	comps := components(found)
	if len(comps) < len(ownComps) || strings.Join(comps[len(comps)-len(ownComps):], "/") != strings.Join(ownComps, "/") {
		return "", 0, dirs, fmt.Errorf("the daemon's cgroup is %s on the host, which does not end in its own view %s", found, own)
	}
	root = "/" + strings.Join(comps[:len(comps)-len(ownComps)], "/")
	if fi, err := os.Stat(filepath.Join(host, Join(root, pid1))); err != nil || !fi.IsDir() {
		return "", 0, dirs, fmt.Errorf("namespace root %s found in %s, but PID 1's cgroup %s is not there (%s): not the host's hierarchy?", root, host, Join(root, pid1), pid1)
	}
	return root, len(comps) - len(ownComps), dirs, nil
}

// hostHierarchy returns the directory where the host's cgroup v2
// hierarchy's root is mounted.
func hostHierarchy(cfg FindConfig) (string, error) {
	base, what := cfg.Host, "the configured host cgroup root"
	if base == "" {
		base, what = cfg.Proc+"/1/root/sys/fs/cgroup", "host PID 1's /sys/fs/cgroup"
	}
	for _, dir := range []string{base, base + "/unified"} {
		var fs unix.Statfs_t
		err := unix.Statfs(dir, &fs)
		if err != nil && dir == base {
			return "", fmt.Errorf("%w: %s %s: %w", ErrNoHostHierarchy, what, base, err)
		}
		if err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
			continue
		}
		// Only the hierarchy's root lacks cgroup.type (CFTYPE_NOT_ON_ROOT,
		// kernel/cgroup/cgroup.c cgroup_base_files): a cgroup2 mount made
		// inside a cgroup namespace has it, and would show R as "/".
		if _, err := os.Stat(dir + "/cgroup.type"); err == nil {
			return "", fmt.Errorf("%w: %s %s is a cgroup namespace's view (its root has cgroup.type), not the host's hierarchy", ErrNoHostHierarchy, what, dir)
		}
		return dir, nil
	}
	return "", fmt.Errorf("%w: %s %s is not a cgroup v2 mount, nor is its unified/", ErrNoHostHierarchy, what, base)
}

// search walks host breadth-first and returns the path (relative to host,
// with a leading '/') of the first directory at depth ≥ from whose
// cgroup.procs lists pid, and how many directories it looked at.
func search(host string, from, pid int) (string, int, error) {
	want := []byte(strconv.Itoa(pid))
	level := []string{"/"}
	dirs := 0
	for depth := 0; len(level) > 0; depth++ {
		var next []string
		for _, rel := range level {
			dirs++
			if dirs > maxSearchDirs {
				return "", dirs, fmt.Errorf("no cgroup in %s lists the daemon's PID %d within %d directories", host, pid, maxSearchDirs)
			}
			dir := filepath.Join(host, rel)
			if depth >= from {
				b, err := os.ReadFile(dir + "/cgroup.procs")
				if err == nil && listsPID(b, want) {
					return rel, dirs, nil
				}
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue // removed meanwhile, or not readable: not ours
			}
			for _, e := range ents {
				if e.IsDir() {
					next = append(next, filepath.Join(rel, e.Name()))
				}
			}
		}
		level = next
	}
	return "", dirs, fmt.Errorf("no cgroup in %s at depth %d or more lists the daemon's PID %d (%d directories looked at): not the host's hierarchy, or another PID namespace's", host, from, pid, dirs)
}

func listsPID(procs, pid []byte) bool {
	for len(procs) > 0 {
		var line []byte
		line, procs, _ = bytes.Cut(procs, []byte{'\n'})
		if bytes.Equal(line, pid) {
			return true
		}
	}
	return false
}

// readV2 reads the cgroup v2 path of a /proc/PID/cgroup file.
func readV2(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	i, err := Parse(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if i.Path == "" {
		return "", fmt.Errorf("%s: no cgroup v2 line (a v1-only host has no cgroup v2 paths to resolve)", file)
	}
	return i.Path, nil
}

// components splits a clean absolute path; "/" has none.
func components(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
