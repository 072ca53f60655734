package health

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/procfs"
)

// Thresholds are the seed's warning rules (REAPER_ZOMBIE_WARN_THRESHOLD,
// REAPER_FREE_MEM_WARN_MB, REAPER_SWAP_WARN_PCT).
type Thresholds struct {
	Zombies   int
	FreeMemMB int
	SwapPct   float64 // fraction, 0..1
}

// ZombieParent is a process holding zombies it has not waited for.
type ZombieParent struct {
	PID     int32  `json:"pid"`
	Comm    string `json:"comm"`
	Zombies int    `json:"zombies"`
}

// Daemon is the daemon's own state, filled in by the caller.
type Daemon struct {
	Source         string
	Processes      int
	Agents         int
	OldestAgentAge time.Duration
	EventsReceived uint64
	EventsLost     uint64
	Resyncs        uint64
	MaxAge         time.Duration
	// KilledPIDs are the agents killed at max age (reason max_age) since
	// the last snapshot: the seed's stale processes. LeftoverPIDs are the
	// leftovers killed (reason leftover) since the last snapshot, kept
	// apart so stale_processes_killed keeps the seed's meaning.
	KilledPIDs   []int32
	LeftoverPIDs []int32
	Sessions     int // sessions tracked now
	// SessionsMemoryBytes sums the sessions' memory at the latest resource
	// sample; LargestSession is the largest of them (nil: no session).
	SessionsMemoryBytes int64
	LargestSession      *SessionMemory
	SpoolRows           int
	SpoolDropped        uint64
}

// Snapshot is one health reading.
type Snapshot struct {
	Taken  time.Time
	Status string // "ok" or "warning"

	ZombieCount     int
	ZombieThreshold int
	ZombieParents   []ZombieParent

	// FreeMemMB is what the seed called free memory: Node's os.freemem(),
	// which is MemAvailable, capped inside a memory-limited cgroup by what
	// the cgroup has left (the host's /proc/meminfo does not see the limit).
	FreeMemMB      int64
	MemAvailableMB int64
	MemTotalMB     int64
	SwapUsedMB     int64
	SwapTotalMB    int64
	SwapFraction   float64

	PSISomeAvg10 *float64 // /proc/pressure/memory, when the kernel has it
	PSIFullAvg10 *float64

	CgroupPath      string
	CgroupCurrentMB *int64
	CgroupMaxMB     *int64 // nil when no ancestor cgroup sets memory.max

	Daemon Daemon
}

// Collector takes snapshots.
type Collector struct {
	mu         sync.Mutex // guards t
	fs         procfs.FS
	scan       func() ([]tracker.ProcInfo, error)
	cgroupRoot string
	t          Thresholds
}

// NewCollector reads /proc at procRoot, lists processes with scan, and
// looks for cgroup v2 files under cgroupRoot ("/sys/fs/cgroup").
func NewCollector(procRoot, cgroupRoot string, scan func() ([]tracker.ProcInfo, error), t Thresholds) (*Collector, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("open procfs %s: %w", procRoot, err)
	}
	return &Collector{fs: fs, scan: scan, cgroupRoot: cgroupRoot, t: t}, nil
}

// SetThresholds replaces the warning thresholds.
func (c *Collector) SetThresholds(t Thresholds) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

const mb = 1 << 20

// Collect takes a snapshot; d is the daemon's state to include.
func (c *Collector) Collect(now time.Time, d Daemon) (Snapshot, error) {
	c.mu.Lock()
	t := c.t
	c.mu.Unlock()
	s := Snapshot{Taken: now, ZombieThreshold: t.Zombies, Daemon: d}
	procs, err := c.scan()
	if err != nil {
		return s, fmt.Errorf("list processes: %w", err)
	}
	s.ZombieCount, s.ZombieParents = zombies(procs, 10)

	mi, err := c.fs.Meminfo()
	if err != nil {
		return s, fmt.Errorf("read meminfo: %w", err)
	}
	s.MemAvailableMB = kbToMB(mi.MemAvailable)
	s.MemTotalMB = kbToMB(mi.MemTotal)
	s.SwapTotalMB = kbToMB(mi.SwapTotal)
	if mi.SwapTotal != nil && mi.SwapFree != nil {
		s.SwapUsedMB = int64(*mi.SwapTotal-*mi.SwapFree) / 1024
	}
	if s.SwapTotalMB > 0 {
		s.SwapFraction = float64(s.SwapUsedMB) / float64(s.SwapTotalMB)
	}
	s.FreeMemMB = s.MemAvailableMB

	if psi, err := c.fs.PSIStatsForResource("memory"); err == nil {
		if psi.Some != nil {
			v := psi.Some.Avg10
			s.PSISomeAvg10 = &v
		}
		if psi.Full != nil {
			v := psi.Full.Avg10
			s.PSIFullAvg10 = &v
		}
	}
	c.cgroup(&s)
	s.Status = t.status(s)
	return s, nil
}

func kbToMB(v *uint64) int64 {
	if v == nil {
		return 0
	}
	return int64(*v / 1024)
}

// status applies the seed's rules: warning above the zombie threshold, below
// the free memory threshold, or above the swap threshold.
func (t Thresholds) status(s Snapshot) string {
	if s.ZombieCount > t.Zombies || s.FreeMemMB < int64(t.FreeMemMB) || s.SwapFraction > t.SwapPct {
		return "warning"
	}
	return "ok"
}

// zombies counts processes in state Z, as `ps -eo stat | grep -c ^Z` does,
// and ranks their parents.
func zombies(procs []tracker.ProcInfo, top int) (int, []ZombieParent) {
	comm := make(map[int32]string, len(procs))
	byParent := map[int32]int{}
	n := 0
	for _, p := range procs {
		comm[p.PID] = p.Comm
		if p.State == 'Z' {
			n++
			byParent[p.PPID]++
		}
	}
	out := make([]ZombieParent, 0, len(byParent))
	for pid, z := range byParent {
		out = append(out, ZombieParent{PID: pid, Comm: comm[pid], Zombies: z})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Zombies != out[j].Zombies {
			return out[i].Zombies > out[j].Zombies
		}
		return out[i].PID < out[j].PID
	})
	if len(out) > top {
		out = out[:top]
	}
	return n, out
}

// cgroup fills in the memory use and the tightest memory.max of the
// daemon's cgroup v2 and its ancestors. Where the daemon is limited, free
// memory is what is left under the limit if that is less than MemAvailable.
func (c *Collector) cgroup(s *Snapshot) {
	rel, err := ownCgroup(c.fs)
	if err != nil {
		return
	}
	dir := filepath.Join(c.cgroupRoot, rel)
	s.CgroupPath = rel
	if cur, err := readBytes(filepath.Join(dir, "memory.current")); err == nil {
		v := cur / mb
		s.CgroupCurrentMB = &v
	}
	var limit, used int64 = -1, 0
	for d := dir; strings.HasPrefix(d, c.cgroupRoot); d = filepath.Dir(d) {
		max, err := readBytes(filepath.Join(d, "memory.max"))
		if err == nil && (limit < 0 || max < limit) {
			limit = max
			used, _ = readBytes(filepath.Join(d, "memory.current"))
		}
		if d == c.cgroupRoot {
			break
		}
	}
	if limit < 0 {
		return
	}
	v := limit / mb
	s.CgroupMaxMB = &v
	if left := (limit - used) / mb; left < s.FreeMemMB {
		s.FreeMemMB = max(left, 0)
	}
}

// ownCgroup returns the daemon's cgroup v2 path ("0::/path" in
// /proc/self/cgroup).
func ownCgroup(fs procfs.FS) (string, error) {
	self, err := fs.Self()
	if err != nil {
		return "", err
	}
	cgs, err := self.Cgroups()
	if err != nil {
		return "", err
	}
	for _, cg := range cgs {
		if cg.HierarchyID == 0 {
			return cg.Path, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy")
}

// readBytes reads a cgroup file holding a byte count; "max" is an error.
func readBytes(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0, errors.New("no limit")
	}
	return strconv.ParseInt(s, 10, 64)
}

// Details returns the details object of the row: the seed's keys first
// (zombie_count, zombie_threshold, free_mem_mb, swap_used_mb, swap_pct,
// stale_processes_killed, max_age_minutes), then the new ones.
// stale_processes_killed counts agents killed at max age only, as in the
// seed; leftovers_killed counts the leftovers killed since the last
// snapshot.
func (s Snapshot) Details() map[string]any {
	d := map[string]any{
		"zombie_count":           s.ZombieCount,
		"zombie_threshold":       s.ZombieThreshold,
		"free_mem_mb":            s.FreeMemMB,
		"swap_used_mb":           s.SwapUsedMB,
		"swap_pct":               int64(math.Round(s.SwapFraction * 100)),
		"stale_processes_killed": len(s.Daemon.KilledPIDs),
		"max_age_minutes":        int64(s.Daemon.MaxAge / time.Minute),

		"zombie_parents":           s.ZombieParents,
		"mem_available_mb":         s.MemAvailableMB,
		"mem_total_mb":             s.MemTotalMB,
		"swap_total_mb":            s.SwapTotalMB,
		"psi_memory_some_avg10":    s.PSISomeAvg10,
		"psi_memory_full_avg10":    s.PSIFullAvg10,
		"cgroup":                   s.CgroupPath,
		"cgroup_memory_current_mb": s.CgroupCurrentMB,
		"cgroup_memory_max_mb":     s.CgroupMaxMB,
		"event_source":             s.Daemon.Source,
		"processes_tracked":        s.Daemon.Processes,
		"agents_tracked":           s.Daemon.Agents,
		"oldest_agent_age_seconds": math.Round(s.Daemon.OldestAgentAge.Seconds()*1000) / 1000,
		"events_received":          s.Daemon.EventsReceived,
		"events_lost":              s.Daemon.EventsLost,
		"resyncs":                  s.Daemon.Resyncs,
		"killed_pids":              nonNil(s.Daemon.KilledPIDs),
		"leftovers_killed":         len(s.Daemon.LeftoverPIDs),
		"leftover_pids":            nonNil(s.Daemon.LeftoverPIDs),
		"sessions":                 s.Daemon.Sessions,
		"spool_rows":               s.Daemon.SpoolRows,
		"spool_dropped":            s.Daemon.SpoolDropped,
	}
	d["sessions_memory_mb"] = s.Daemon.SessionsMemoryBytes >> 20
	if l := s.Daemon.LargestSession; l != nil {
		d["largest_session"] = map[string]any{"pid": l.PID, "comm": l.Comm, "memory_mb": l.MemoryBytes >> 20}
	} else {
		d["largest_session"] = nil
	}
	return d
}

// SessionMemory names a session and its memory.
type SessionMemory struct {
	PID         int32
	Comm        string
	MemoryBytes int64
}

func nonNil(p []int32) []int32 {
	if p == nil {
		return []int32{}
	}
	return p
}

// ActionTaken is the seed's action_taken, "Killed PIDs: 1, 2" for agents
// killed at max age, followed by "; leftover PIDs: 3, 4" when leftovers
// were killed too ("Killed leftover PIDs: 3, 4" when only they were), or
// nil when nothing was killed.
func (s Snapshot) ActionTaken() *string {
	var parts []string
	if len(s.Daemon.KilledPIDs) > 0 {
		parts = append(parts, "Killed PIDs: "+pidList(s.Daemon.KilledPIDs))
	}
	if len(s.Daemon.LeftoverPIDs) > 0 {
		prefix := "leftover PIDs: "
		if len(parts) == 0 {
			prefix = "Killed leftover PIDs: "
		}
		parts = append(parts, prefix+pidList(s.Daemon.LeftoverPIDs))
	}
	if len(parts) == 0 {
		return nil
	}
	a := strings.Join(parts, "; ")
	return &a
}

func pidList(pids []int32) string {
	parts := make([]string, len(pids))
	for i, p := range pids {
		parts[i] = strconv.Itoa(int(p))
	}
	return strings.Join(parts, ", ")
}
