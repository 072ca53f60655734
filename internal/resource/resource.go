package resource

import (
	"errors"
	"sort"
	"sync"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// TicksPerSecond is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux ABI (include/asm-generic/param.h).
const TicksPerSecond = 100

// Usage is what one read says about one process.
type Usage struct {
	// MemoryBytes is the process's memory by the chosen measure (anon RSS
	// for ProcReader: see its doc).
	MemoryBytes int64
	// Ticks is utime + stime of all its threads, in clock ticks.
	Ticks uint64
}

// Reader reads one process's usage. A process that is gone, or whose PID
// now belongs to a process that did not start at start, yields an error
// satisfying errors.Is(err, tracker.ErrGone).
type Reader interface {
	Read(pid int32, start tracker.Start) (Usage, error)
}

// Members is what the sampler needs of the table.
type Members interface {
	SessionMembers(buf []tracker.Member) []tracker.Member
}

// Clock reads CLOCK_BOOTTIME in nanoseconds (tracker.SystemClock).
type Clock interface{ Now() int64 }

// Session is one session's figures at the latest sample.
type Session struct {
	ID tracker.SessionID
	// Comm is the session's agent's name.
	Comm string
	// Started is the boottime (ns) of the agent's start.
	Started int64
	// MemoryBytes is the sum of the members' memory (anon RSS).
	MemoryBytes int64
	// Procs is the number of live members, the agent included.
	Procs int
	// CPUSeconds is the CPU time the session's members used since the
	// sampler first saw them, including members that exited since (up to
	// their last sample).
	CPUSeconds float64
	// IdleSeconds is the time since the last sample at which a member had
	// used CPU or the membership had changed: never more than the real
	// time since any member last ran (see Sampler).
	IdleSeconds float64
	// Exempt: the agent is kept (never killed for resources).
	Exempt bool
	// AgentAlive: the session's agent still runs (else only leftovers).
	AgentAlive bool
	// CPUPercent is the session's CPU use between the last two samples, in
	// percent of one core.
	CPUPercent float64
	// Killing: the session is already queued or being killed as a whole.
	Killing bool
}

// memberKey identifies a process across samples.
type memberKey struct {
	pid   int32
	start int64
}

// seen is a member at a sample: its ticks and its session.
type seen struct {
	ticks   uint64
	session tracker.SessionID
}

// state is what the sampler remembers of one session between samples.
type state struct {
	carried    uint64 // ticks of members that exited, as of their last sample
	last       uint64 // the session's ticks at the previous sample, carried included
	lastActive int64  // boottime of the last sample that showed activity
	sampled    uint64 // the last sample (Sampler.gen) that saw the session
	sig        uint64 // membership signature at the previous sample
	fresh      bool   // not sampled before
}

// Sampler keeps every session's figures, refreshed by Sample.
//
// Idleness: a session is active at a sample if any member's CPU ticks grew
// since the previous sample, or its membership changed (a fork or an exit
// is activity; an exiting member takes its CPU time with it). Its last
// activity is then the time of that sample, which is at or after the real
// last use of CPU: the idle time reported is never more than the real one,
// so an idle limit never fires early. A session first seen counts as active
// then. The unit is the clock tick (10 ms): a session whose members use
// less than one tick of CPU in all its idle time counts as idle.
type Sampler struct {
	members Members
	read    Reader
	clock   Clock

	mu     sync.Mutex // guards latest
	latest []Session

	// Sample's own state, one Sample at a time (sampleMu).
	sampleMu sync.Mutex
	buf      []tracker.Member
	sums     []uint64           // per session of this sample: its members' ticks
	sigs     []uint64           // per session of this sample: membership signature
	prev     map[memberKey]seen // each member at the previous sample
	next     map[memberKey]seen // ... at this one
	sessions map[tracker.SessionID]*state
	lastAt   int64
	gen      uint64 // samples taken
}

// NewSampler returns a sampler over the table's members.
func NewSampler(members Members, read Reader, clock Clock) *Sampler {
	return &Sampler{members: members, read: read, clock: clock,
		prev: map[memberKey]seen{}, next: map[memberKey]seen{}, sessions: map[tracker.SessionID]*state{}}
}

// Latest returns the figures of the last sample, ordered by session PID.
// The slice is shared: do not modify it.
func (s *Sampler) Latest() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

// Sample reads every member of every session once and returns the new
// figures (what Latest returns from now on) and the number of reads that
// failed for another reason than a vanished process. A member that
// vanished is simply not counted (its exit is activity).
func (s *Sampler) Sample() ([]Session, int) {
	s.sampleMu.Lock()
	defer s.sampleMu.Unlock()
	s.buf = s.members.SessionMembers(s.buf[:0])
	now := s.clock.Now()
	s.gen++
	out := make([]Session, 0, len(s.sessions)+1)
	s.sums, s.sigs = s.sums[:0], s.sigs[:0]
	clear(s.next)
	failed := 0
	for i := range s.buf {
		m := &s.buf[i]
		if n := len(out); n == 0 || out[n-1].ID != m.Session {
			out = append(out, Session{ID: m.Session, Comm: m.Comm, Started: m.Session.Start.NS,
				Exempt: m.Exempt, AgentAlive: m.AgentAlive, Killing: m.Killing})
			s.sums, s.sigs = append(s.sums, 0), append(s.sigs, 0)
		}
		n := len(out) - 1
		cur := &out[n]
		cur.Procs++
		k := memberKey{m.PID, m.Start.NS}
		s.sigs[n] += mix(k)
		u, err := s.read.Read(m.PID, m.Start)
		if err != nil {
			if !errors.Is(err, tracker.ErrGone) {
				failed++
				if p, ok := s.prev[k]; ok {
					s.next[k] = p // not read, not gone: keep its ticks, carry nothing
					s.sums[n] += p.ticks
				}
			}
			continue
		}
		cur.MemoryBytes += u.MemoryBytes
		s.sums[n] += u.Ticks
		s.next[k] = seen{ticks: u.Ticks, session: m.Session}
	}
	// Members gone since the previous sample carry their ticks then into
	// their session's total, so that it never goes back.
	for k, p := range s.prev {
		if _, ok := s.next[k]; !ok {
			if st := s.sessions[p.session]; st != nil {
				st.carried += p.ticks
			}
		}
	}
	for i := range out {
		st := s.sessions[out[i].ID]
		if st == nil {
			st = &state{fresh: true}
			s.sessions[out[i].ID] = st
		}
		s.finish(&out[i], st, s.sums[i], s.sigs[i], now)
	}
	for id, st := range s.sessions {
		if st.sampled != s.gen {
			delete(s.sessions, id) // no member left
		}
	}
	s.prev, s.next = s.next, s.prev
	s.lastAt = now
	sort.Slice(out, func(i, j int) bool { return out[i].ID.PID < out[j].ID.PID })
	s.mu.Lock()
	s.latest = out
	s.mu.Unlock()
	return out, failed
}

// finish completes one session's figures: CPU, activity, idleness.
func (s *Sampler) finish(cur *Session, st *state, ticks, sig uint64, now int64) {
	total := st.carried + ticks
	active := st.fresh || sig != st.sig || total > st.last
	if !st.fresh && now > s.lastAt && total >= st.last {
		cur.CPUPercent = float64(total-st.last) / TicksPerSecond / (float64(now-s.lastAt) / 1e9) * 100
	}
	if active {
		st.lastActive = now
	}
	st.last, st.sig, st.sampled, st.fresh = max(total, st.last), sig, s.gen, false
	cur.CPUSeconds = float64(st.last) / TicksPerSecond
	cur.IdleSeconds = float64(now-st.lastActive) / 1e9
}

// mix spreads a member's identity over 64 bits, so that the sum over the
// members is a membership signature that a fork and an exit in the same
// interval do not cancel out.
func mix(k memberKey) uint64 {
	x := uint64(uint32(k.pid))<<32 ^ uint64(k.start)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
