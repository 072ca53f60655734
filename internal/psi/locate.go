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
	Path   string // the memory pressure file
	Cgroup string // the cgroup whose limit made it the choice; "" for the system-wide file
	Limit  int64  // that cgroup's memory limit in bytes; 0 for the system-wide file
	Why    string // one line for the log
}

// ErrNoPSI is wrapped when the host has no pressure stall information.
var ErrNoPSI = errors.New("no pressure stall information on this host (the kernel needs CONFIG_PSI, and psi=1 on its command line when built with CONFIG_PSI_DEFAULT_DISABLED)")

// Locate chooses the memory pressure file for the daemon (proc is the /proc
// mount, cgroup the cgroup mount, normally /proc and /sys/fs/cgroup).
//
// When the daemon's memory is limited by a cgroup — its own or an
// ancestor's memory.max is not "max" (cgroup v2), or on a hybrid host the v1
// memory controller's memory.limit_in_bytes is below the root's — the
// pressure that matters is the one that limit causes, which the system-wide
// file dilutes over the whole machine: the limiting group's memory.pressure
// (it counts every task below it, the agents beside the daemon included).
// On a hybrid host that file lives in the unified hierarchy under the same
// path, if systemd or the container runtime made one there. Otherwise the
// system-wide /proc/pressure/memory. The file is read once to prove PSI is
// there.
func Locate(proc, cgroup string) (Location, error) {
	loc, err := choose(proc, cgroup)
	if err != nil {
		return Location{}, err
	}
	b, err := os.ReadFile(loc.Path)
	if err != nil {
		// ENOENT without CONFIG_PSI; EOPNOTSUPP when PSI is disabled at boot.
		return Location{}, fmt.Errorf("%w: %v", ErrNoPSI, err)
	}
	if _, err := Parse(b); err != nil {
		return Location{}, fmt.Errorf("%s: %w", loc.Path, err)
	}
	return loc, nil
}

func choose(proc, cgroup string) (Location, error) {
	system := Location{Path: filepath.Join(proc, "pressure/memory"), Why: "the daemon's memory is not limited by a cgroup: system-wide pressure"}
	self, err := os.ReadFile(filepath.Join(proc, "self/cgroup"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return system, nil // a kernel without cgroups
		}
		return Location{}, fmt.Errorf("read own cgroup: %w", err)
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
				limit, _ := strconv.ParseInt(s, 10, 64)
				f := filepath.Join(unified, p, "memory.pressure")
				if !exists(f) {
					return Location{}, fmt.Errorf("%w: cgroup %s limits memory but has no memory.pressure", ErrNoPSI, p)
				}
				return Location{Path: f, Cgroup: p, Limit: limit,
					Why: "the daemon's memory is limited by this cgroup (memory.max): its pressure"}, nil
			}
			if p == "/" {
				break
			}
		}
	case v1 != "" && memoryPath != "":
		root, err := readInt(filepath.Join(v1, "memory.limit_in_bytes"))
		if err != nil {
			return Location{}, fmt.Errorf("cgroup v1 memory controller: %w", err)
		}
		for p := memoryPath; p != "/"; p = path.Dir(p) {
			// The root's value is "no limit" (PAGE_COUNTER_MAX pages,
			// rounded to the page size): anything below it is a limit.
			limit, err := readInt(filepath.Join(v1, p, "memory.limit_in_bytes"))
			if err != nil || limit >= root {
				continue
			}
			if unified != "" {
				if f := filepath.Join(unified, p, "memory.pressure"); exists(f) {
					return Location{Path: f, Cgroup: p, Limit: limit,
						Why: "the daemon's memory is limited by this cgroup (v1 memory.limit_in_bytes): the unified hierarchy's pressure for the same path"}, nil
				}
			}
			system.Cgroup, system.Limit = p, limit
			system.Why = "the daemon's memory is limited by this v1 cgroup, which has no memory.pressure in the unified hierarchy: system-wide pressure (it counts the stalls this limit causes too)"
			return system, nil
		}
	}
	return system, nil
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
