package psi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Location is the pressure file a trigger watches and why it was chosen.
type Location struct {
	Path string // the memory pressure file
	// Cgroup is the cgroup whose memory limit bounds the daemon ("" when
	// none does), Limit that limit in bytes; they are reported whether or
	// not its memory.pressure was chosen (Shared says which).
	Cgroup string
	Limit  int64
	Shared bool   // Path is Cgroup's memory.pressure: the sessions live under that limit too
	Why    string // one line for the log
}

// ErrNoPSI is wrapped when the host has no pressure stall information.
var ErrNoPSI = errors.New("no pressure stall information on this host (the kernel needs CONFIG_PSI, and psi=1 on its command line when built with CONFIG_PSI_DEFAULT_DISABLED)")

// Locate chooses the memory pressure file for the daemon (proc is the /proc
// mount, cgroup the cgroup mount, normally /proc and /sys/fs/cgroup).
//
// The rule: a cgroup's memory.pressure only when the cgroup whose limit
// bounds the daemon also holds the sessions it supervises; else the
// system-wide /proc/pressure/memory.
//
// A limit bounds the daemon when its own cgroup's or an ancestor's
// memory.max is not "max" (cgroup v2), or on a hybrid host the v1 memory
// controller's memory.limit_in_bytes is below the root's. Whether the
// sessions are under it too is not something the daemon can know in
// general: under `supervisor run` they can be anywhere on the host (a
// systemd unit's MemoryMax=, a Kubernetes pod's limits.memory bound the
// daemon alone, and that file would measure only the daemon's own stalls),
// so with no members Locate always picks the system-wide file. members
// are processes that stand for the sessions (`supervisor init`: its
// command, whose descendants are the sessions): the limiting cgroup's file
// is chosen only when every member's cgroup (its /proc/PID/cgroup) is that
// cgroup or below it. On a hybrid host that file is the unified
// hierarchy's for the same path, if systemd or the container runtime made
// one there.
//
// /proc/pressure/memory is the same file in every container: the kernel
// serves it from the system-wide group whatever the reader's PID or cgroup
// namespace (psi_memory_show and psi_write use psi_system,
// kernel/sched/psi.c), and it counts the stalls that cgroup limits cause
// too. The file is read once to prove PSI is there.
func Locate(proc, cgroup string, members []int) (Location, error) {
	loc, err := choose(proc, cgroup, members)
	if err != nil {
		return Location{}, err
	}
	return loc, check(loc)
}

// At is the operator's choice (--pressure-file): path as given, read once
// to prove it is a pressure file.
func At(path string) (Location, error) {
	loc := Location{Path: path, Why: "--pressure-file"}
	return loc, check(loc)
}

func check(loc Location) error {
	b, err := os.ReadFile(loc.Path)
	if err != nil {
		// ENOENT without CONFIG_PSI; EOPNOTSUPP when PSI is disabled at boot.
		return fmt.Errorf("%w: %v", ErrNoPSI, err)
	}
	if _, err := Parse(b); err != nil {
		return fmt.Errorf("%s: %w", loc.Path, err)
	}
	return nil
}

// limit is the cgroup bounding the daemon's memory.
type limit struct {
	path  string // cgroup path, as /proc/self/cgroup names it
	bytes int64
	file  string // its memory.pressure, "" when it has none
	v1    bool   // found in the v1 memory controller
}

func choose(proc, cgroup string, members []int) (Location, error) {
	system := Location{Path: filepath.Join(proc, "pressure/memory")}
	lim, err := daemonLimit(proc, cgroup)
	if err != nil {
		return Location{}, err
	}
	if lim.path == "" {
		system.Why = "the daemon's memory is not limited by a cgroup: system-wide pressure"
		return system, nil
	}
	system.Cgroup, system.Limit = lim.path, lim.bytes
	if len(members) == 0 {
		system.Why = "a cgroup limits the daemon's memory, but the sessions may be anywhere on the host: system-wide pressure"
		return system, nil
	}
	for _, pid := range members {
		b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cgroup"))
		if err != nil {
			system.Why = fmt.Sprintf("a cgroup limits the daemon's memory, but the cgroup of process %d is unknown (%v): system-wide pressure", pid, err)
			return system, nil
		}
		unified, memory := ParseCgroupFile(b)
		p := unified
		if lim.v1 {
			p = memory
		}
		if p == "" || !under(p, lim.path) {
			system.Why = fmt.Sprintf("a cgroup limits the daemon's memory, but process %d is outside it (in %q): system-wide pressure", pid, p)
			return system, nil
		}
	}
	if lim.file == "" {
		if !lim.v1 {
			return Location{}, fmt.Errorf("%w: cgroup %s limits memory but has no memory.pressure", ErrNoPSI, lim.path)
		}
		system.Why = "the sessions share the daemon's v1 memory cgroup, which has no memory.pressure in the unified hierarchy: system-wide pressure (it counts the stalls this limit causes too)"
		return system, nil
	}
	why := "the sessions share the daemon's memory-limited cgroup (memory.max): its pressure"
	if lim.v1 {
		why = "the sessions share the daemon's memory-limited cgroup (v1 memory.limit_in_bytes): the unified hierarchy's pressure for the same path"
	}
	return Location{Path: lim.file, Cgroup: lim.path, Limit: lim.bytes, Shared: true, Why: why}, nil
}

// under reports whether cgroup path p is dir or below it.
func under(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// daemonLimit finds the nearest cgroup (the daemon's own or an ancestor)
// that limits the daemon's memory; path "" when none does.
func daemonLimit(proc, cgroup string) (limit, error) {
	self, err := os.ReadFile(filepath.Join(proc, "self/cgroup"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return limit{}, nil // a kernel without cgroups
		}
		return limit{}, fmt.Errorf("read own cgroup: %w", err)
	}
	unifiedPath, memoryPath := ParseCgroupFile(self)

	// The unified hierarchy: at the mount itself on a pure v2 host, at
	// unified/ on a hybrid one (systemd's layout).
	unified := ""
	if exists(filepath.Join(cgroup, "cgroup.controllers")) {
		unified = cgroup
	} else if exists(filepath.Join(cgroup, "unified/cgroup.controllers")) {
		unified = filepath.Join(cgroup, "unified")
	}
	v1 := filepath.Join(cgroup, "memory")
	if unified == cgroup || !exists(filepath.Join(v1, "memory.limit_in_bytes")) {
		v1 = ""
	}

	switch {
	case v1 == "" && unified != "" && unifiedPath != "":
		for p := unifiedPath; ; p = path.Dir(p) {
			v, err := os.ReadFile(filepath.Join(unified, p, "memory.max"))
			if s := strings.TrimSpace(string(v)); err == nil && s != "max" {
				n, _ := strconv.ParseInt(s, 10, 64)
				l := limit{path: p, bytes: n}
				if f := filepath.Join(unified, p, "memory.pressure"); exists(f) {
					l.file = f
				}
				return l, nil
			}
			if p == "/" {
				break
			}
		}
	case v1 != "" && memoryPath != "":
		root, err := readInt(filepath.Join(v1, "memory.limit_in_bytes"))
		if err != nil {
			return limit{}, fmt.Errorf("cgroup v1 memory controller: %w", err)
		}
		for p := memoryPath; p != "/"; p = path.Dir(p) {
			// The root's value is "no limit" (PAGE_COUNTER_MAX pages,
			// rounded to the page size): anything below it is a limit.
			n, err := readInt(filepath.Join(v1, p, "memory.limit_in_bytes"))
			if err != nil || n >= root {
				continue
			}
			l := limit{path: p, bytes: n, v1: true}
			if unified != "" {
				if f := filepath.Join(unified, p, "memory.pressure"); exists(f) {
					l.file = f
				}
			}
			return l, nil
		}
	}
	return limit{}, nil
}

// ParseCgroupFile reads /proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines) and
// returns the unified hierarchy's path (the "0::" line) and the v1 memory
// controller's, each "" when absent. A path outside the reader's cgroup
// namespace ("/../x") is treated as absent: it cannot be found under the
// mount.
func ParseCgroupFile(b []byte) (unified, memory string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(p, "/") || strings.Contains(p, "/..") {
			continue
		}
		p = path.Clean(p)
		if id == "0" && ctrls == "" {
			unified = p
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			if c == "memory" {
				memory = p
			}
		}
	}
	return unified, memory
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", p, clip(bytes.TrimSpace(b)))
	}
	return n, nil
}
