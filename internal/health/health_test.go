package health

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

func TestZombies(t *testing.T) {
	procs := []tracker.ProcInfo{
		{PID: 10, Comm: "claude", State: 'S'},
		{PID: 20, Comm: "node", State: 'S'},
		{PID: 11, PPID: 10, State: 'Z'},
		{PID: 12, PPID: 10, State: 'Z'},
		{PID: 21, PPID: 20, State: 'Z'},
		{PID: 22, PPID: 20, State: 'S'},
	}
	n, parents := zombies(procs, 10)
	if n != 3 || len(parents) != 2 || parents[0] != (ZombieParent{10, "claude", 2}) || parents[1] != (ZombieParent{20, "node", 1}) {
		t.Fatalf("zombies %d %+v", n, parents)
	}
	if _, top := zombies(procs, 1); len(top) != 1 {
		t.Error("top not applied")
	}
}

func TestStatus(t *testing.T) {
	c := Thresholds{Zombies: 5, FreeMemMB: 1024, SwapPct: 0.7}
	cases := []struct {
		s    Snapshot
		want string
	}{
		{Snapshot{ZombieCount: 5, FreeMemMB: 1024, SwapFraction: 0.7}, "ok"}, // the seed's rules are strict inequalities
		{Snapshot{ZombieCount: 6, FreeMemMB: 4096}, "warning"},
		{Snapshot{FreeMemMB: 1023}, "warning"},
		{Snapshot{FreeMemMB: 4096, SwapFraction: 0.71}, "warning"},
	}
	for _, tc := range cases {
		if got := c.status(tc.s); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.s, got, tc.want)
		}
	}
}

func TestDetailsKeepSeedKeys(t *testing.T) {
	s := Snapshot{ZombieCount: 3, ZombieThreshold: 500, FreeMemMB: 900, SwapUsedMB: 10, SwapFraction: 0.126,
		Daemon: Daemon{KilledPIDs: []int32{7, 9}, MaxAge: 2 * time.Hour}}
	b, _ := json.Marshal(s.Details())
	var d map[string]any
	json.Unmarshal(b, &d)
	want := map[string]float64{"zombie_count": 3, "zombie_threshold": 500, "free_mem_mb": 900, "swap_used_mb": 10,
		"swap_pct": 13, "stale_processes_killed": 2, "max_age_minutes": 120}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	if a := s.ActionTaken(); a == nil || *a != "Killed PIDs: 7, 9" {
		t.Errorf("action_taken %v", a)
	}
	if (Snapshot{}).ActionTaken() != nil {
		t.Error("action_taken without kills should be null")
	}
}

// TestCollect reads this machine's /proc for real.
func TestCollect(t *testing.T) {
	fs, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCollector("/proc", "/sys/fs/cgroup", fs.Scan, Thresholds{Zombies: 1 << 30, SwapPct: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Collect(time.Now(), Daemon{})
	if err != nil {
		t.Fatal(err)
	}
	if s.MemTotalMB <= 0 || s.MemAvailableMB <= 0 || s.FreeMemMB > s.MemAvailableMB || s.Status != "ok" {
		t.Errorf("snapshot %+v", s)
	}
}

// TestDetailsLeftoversApart: leftovers killed are counted in their own key
// and never in stale_processes_killed (agents at max age, the seed's
// meaning); every key of the previous version is still there.
func TestDetailsLeftoversApart(t *testing.T) {
	s := Snapshot{Daemon: Daemon{KilledPIDs: []int32{7}, LeftoverPIDs: []int32{11, 12, 13}, Sessions: 4, MaxAge: time.Hour}}
	b, _ := json.Marshal(s.Details())
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"stale_processes_killed": 1, "leftovers_killed": 3, "sessions": 4}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	if got := fmtJSON(d["killed_pids"]); got != "[7]" {
		t.Errorf("killed_pids %s, want only the agent: [7]", got)
	}
	if got := fmtJSON(d["leftover_pids"]); got != "[11,12,13]" {
		t.Errorf("leftover_pids %s", got)
	}
	for _, k := range []string{"zombie_count", "zombie_threshold", "free_mem_mb", "swap_used_mb", "swap_pct",
		"stale_processes_killed", "max_age_minutes", "zombie_parents", "mem_available_mb", "mem_total_mb",
		"swap_total_mb", "psi_memory_some_avg10", "psi_memory_full_avg10", "cgroup", "cgroup_memory_current_mb",
		"cgroup_memory_max_mb", "event_source", "processes_tracked", "agents_tracked", "oldest_agent_age_seconds",
		"events_received", "events_lost", "resyncs", "killed_pids", "spool_rows", "spool_dropped"} {
		if _, ok := d[k]; !ok {
			t.Errorf("key %s lost", k)
		}
	}
	if a := s.ActionTaken(); a == nil || *a != "Killed PIDs: 7; leftover PIDs: 11, 12, 13" {
		t.Errorf("action_taken %v", deref(a))
	}
	s.Daemon.KilledPIDs = nil
	if a := s.ActionTaken(); a == nil || *a != "Killed leftover PIDs: 11, 12, 13" {
		t.Errorf("action_taken, leftovers only: %v", deref(a))
	}
	b, _ = json.Marshal(Snapshot{}.Details())
	json.Unmarshal(b, &d)
	if d["leftovers_killed"] != 0.0 || d["sessions"] != 0.0 || fmtJSON(d["leftover_pids"]) != "[]" {
		t.Errorf("no kills: leftovers_killed %v, sessions %v, leftover_pids %v", d["leftovers_killed"], d["sessions"], d["leftover_pids"])
	}
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// TestDetailsSummaryInterval: each row says how often its host takes one,
// so a reader can tell a quiet host from a slow one; null when unknown.
func TestDetailsSummaryInterval(t *testing.T) {
	for _, tc := range []struct {
		iv   time.Duration
		want any
	}{{5 * time.Minute, 300.0}, {1500 * time.Millisecond, 1.5}, {0, nil}} {
		b, _ := json.Marshal(Snapshot{Daemon: Daemon{SummaryInterval: tc.iv}}.Details())
		var d map[string]any
		json.Unmarshal(b, &d)
		v, ok := d["summary_interval_s"]
		if !ok || v != tc.want {
			t.Errorf("interval %s: summary_interval_s %v (present %v), want %v", tc.iv, v, ok, tc.want)
		}
	}
}
