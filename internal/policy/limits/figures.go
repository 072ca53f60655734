package limits

import (
	"sort"

	"github.com/agent-supervisor/supervisor/internal/health"
	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Latest is the last sample (nil before the first): /agents, the pressure
// policy's candidates and the health snapshot read it.
func (g *Guard) Latest() []resource.Session { return g.cfg.Sampler.Latest() }

// MemberMemory is one member's memory at the latest sample (/agents?members=).
func (g *Guard) MemberMemory(pid int32, start tracker.Start) (int64, bool) {
	m, ok := g.cfg.Sampler.(interface {
		MemberMemory(pid int32, start tracker.Start) (int64, bool)
	})
	if !ok {
		return 0, false
	}
	return m.MemberMemory(pid, start)
}

// Memory is the sessions' memory at the last sample, for the health
// snapshot: their sum and the largest of them (nil: no session). A
// session's memory here is the box's: its kept members' too.
func (g *Guard) Memory() (total int64, largest *health.SessionMemory) {
	var big *resource.Session
	var bigMem int64
	latest := g.Latest()
	for i := range latest {
		s := &latest[i]
		m := s.MemoryBytes + s.KeptMemoryBytes
		total += m
		if big == nil || m > bigMem {
			big, bigMem = s, m
		}
	}
	if big != nil {
		largest = &health.SessionMemory{PID: big.ID.PID, Comm: big.Comm, MemoryBytes: bigMem}
	}
	return total, largest
}

// sessionMemoryCollector is supervisor_session_memory_bytes: a histogram
// over the sessions of the latest sample (no per-session labels).
type sessionMemoryCollector struct{ g *Guard }

var (
	descSessionMemory = prometheus.NewDesc("supervisor_session_memory_bytes",
		"Sessions by memory (anon RSS of their members, kept ones included) at the latest resource sample.", nil, nil)
	sessionMemoryBuckets = []float64{16 << 20, 64 << 20, 256 << 20, 512 << 20, 1 << 30, 2 << 30, 4 << 30, 8 << 30, 16 << 30, 32 << 30}
)

func (c *sessionMemoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descSessionMemory }

func (c *sessionMemoryCollector) Collect(ch chan<- prometheus.Metric) {
	latest := c.g.Latest()
	counts := make(map[float64]uint64, len(sessionMemoryBuckets))
	var sum float64
	mem := make([]float64, len(latest))
	for i := range latest {
		mem[i] = float64(latest[i].MemoryBytes + latest[i].KeptMemoryBytes)
		sum += mem[i]
	}
	sort.Float64s(mem)
	j := 0
	for _, b := range sessionMemoryBuckets {
		for j < len(mem) && mem[j] <= b {
			j++
		}
		counts[b] = uint64(j) // cumulative
	}
	ch <- prometheus.MustNewConstHistogram(descSessionMemory, uint64(len(mem)), sum, counts)
}

// keepResolve: command lines the table may read per sample to decide
// whether a --keep rule with :TEXT matches a member (under the table's
// lock; memoised until the member renames or execs): a bounded stretch of
// lock a sample for a session that gained thousands of members. A member
// not decided yet counts as not kept.
const keepResolve = 256

// threadCPU is the calling thread's CPU time in nanoseconds (0 if the
// clock cannot be read).
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}
