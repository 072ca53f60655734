package resource

import (
	"errors"
	"sort"
	"sync"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Usage is what one read says about one process.
type Usage struct {
	// MemoryBytes is the process's memory by the chosen measure (anon RSS
	// for ProcReader: see its doc).
	MemoryBytes int64
	// CPUNanos is the CPU time all its threads used, in nanoseconds.
	CPUNanos uint64
}

// Reader reads one process's usage. A process that is gone, or whose PID
// now belongs to a process that did not start at start, yields an error
// satisfying errors.Is(err, tracker.ErrGone).
type Reader interface {
	Read(pid int32, start tracker.Start) (Usage, error)
	// Sweep is called after each sample: what the reader keeps for
	// processes it was not asked about since the last Sweep can go.
	Sweep()
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
	// MemoryBytes is the sum of the memory (anon RSS) of the members that
	// are not root-kept (tracker.Member.Kept): what the limits and the
	// pressure policy judge, since a kill spares root-kept processes. A
	// REAPER_KEEP=1 member counts here like any other. While the session is being killed
	// (Killing) it is the figure of the last sample before.
	MemoryBytes int64
	// Procs is the number of live members that are not root-kept, the
	// agent included unless it is.
	Procs int
	// KeptMemoryBytes and KeptProcs are the same for the root-kept
	// members (a --keep rule, a control-socket keep, or below such a
	// process), which no limit counts: the session's whole figures are the
	// sums.
	KeptMemoryBytes int64
	KeptProcs       int
	// CPUSeconds is the CPU time the session's members used since the
	// sampler first saw them, including members that exited since (up to
	// their last sample).
	CPUSeconds float64
	// IdleSeconds is the time since the last sample at which a member had
	// used CPU or the membership had changed: never more than the real
	// time since any member last ran (see Sampler).
	IdleSeconds float64
	// Exempt: the agent is root-kept, or every live member is: nothing of
	// the session is killed for resources.
	Exempt bool
	// AgentAlive: the session's agent still runs (else only leftovers).
	AgentAlive bool
	// CPUPercent is the session's CPU use between the last two samples, in
	// percent of one core.
	CPUPercent float64
	// Killing: the session is already queued or being killed as a whole.
	// Its members are not read meanwhile (their held descriptors are
	// closed): only the process counts are fresh.
	Killing bool
}

// memberKey identifies a process across samples.
type memberKey struct {
	pid   int32
	start int64
}

// seen is a member at a sample: its cpu and its session.
type seen struct {
	cpu     uint64 // CPU ns
	mem     int64  // memory (anon RSS) at the last read
	session tracker.SessionID
}

// state is what the sampler remembers of one session between samples.
type state struct {
	carried    uint64 // CPU ns of members that exited, as of their last sample
	last       uint64 // the session's cpu at the previous sample, carried included
	lastActive int64  // boottime of the last sample that showed activity
	sampled    uint64 // the last sample (Sampler.gen) that saw the session
	sig        uint64 // membership signature at the previous sample
	fresh      bool   // not sampled before
	mem, kept  int64  // memory and kept memory at the last sample that read it
}

// Sampler keeps every session's figures, refreshed by Sample.
//
// Idleness: a session is active at a sample if any member's CPU cpu grew
// since the previous sample, or its membership changed (a fork or an exit
// is activity; an exiting member takes its CPU time with it). Its last
// activity is then the time of that sample, which is at or after the real
// last use of CPU: the idle time reported is never more than the real one,
// so an idle limit never fires early. A session first seen counts as active
// then, and so does a session one of whose members could not be read for
// another reason than its exit (EMFILE, EACCES): what it did is unknown, and
// a failed read must never make a session look idle. CPU time is counted in
// nanoseconds (ProcReader): any use of CPU, however short (a timer's
// wake-up), is activity. Kept members' CPU counts too: a session is idle
// only when none of its processes runs.
type Sampler struct {
	members Members
	read    Reader
	clock   Clock

	mu     sync.Mutex // guards latest
	latest []Session

	// Sample's own state, one Sample at a time (sampleMu).
	sampleMu sync.Mutex
	buf      []tracker.Member
	sums     []uint64           // per session of this sample: its members' cpu
	sigs     []uint64           // per session of this sample: membership signature
	unknown  []bool             // per session of this sample: a member's read failed
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

// MemberMemory is the memory (anon RSS) of one member (PID and start) at
// the last sample that read it; false when it was not read (not a member
// then, or not readable). It waits for a sample in progress.
func (s *Sampler) MemberMemory(pid int32, start tracker.Start) (int64, bool) {
	s.sampleMu.Lock()
	defer s.sampleMu.Unlock()
	p, ok := s.prev[memberKey{pid, start.NS}]
	return p.mem, ok
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
	s.sums, s.sigs, s.unknown = s.sums[:0], s.sigs[:0], s.unknown[:0]
	clear(s.next)
	failed := 0
	for i := range s.buf {
		m := &s.buf[i]
		if n := len(out); n == 0 || out[n-1].ID != m.Session {
			out = append(out, Session{ID: m.Session, Comm: m.Comm, Started: m.Session.Start.NS,
				Exempt: m.Exempt, AgentAlive: m.AgentAlive, Killing: m.Killing})
			s.sums, s.sigs, s.unknown = append(s.sums, 0), append(s.sigs, 0), append(s.unknown, false)
		}
		n := len(out) - 1
		cur := &out[n]
		if m.Kept {
			cur.KeptProcs++
		} else {
			cur.Procs++
		}
		k := memberKey{m.PID, m.Start.NS}
		s.sigs[n] += mix(k)
		if m.Killing {
			// Being killed: the record has its figures already, and what
			// dies needs no descriptor held (Sweep closes them). Keep each
			// member's cpu so that nothing is carried twice.
			if p, ok := s.prev[k]; ok {
				s.next[k] = p
				s.sums[n] += p.cpu
			}
			continue
		}
		u, err := s.read.Read(m.PID, m.Start)
		if err != nil {
			if !errors.Is(err, tracker.ErrGone) {
				failed++
				s.unknown[n] = true
				if p, ok := s.prev[k]; ok {
					s.next[k] = p // not read, not gone: keep its cpu, carry nothing
					s.sums[n] += p.cpu
				}
			}
			continue
		}
		if m.Kept {
			cur.KeptMemoryBytes += u.MemoryBytes
		} else {
			cur.MemoryBytes += u.MemoryBytes
		}
		s.sums[n] += u.CPUNanos
		s.next[k] = seen{cpu: u.CPUNanos, mem: u.MemoryBytes, session: m.Session}
	}
	// Members gone since the previous sample carry their cpu then into
	// their session's total, so that it never goes back.
	for k, p := range s.prev {
		if _, ok := s.next[k]; !ok {
			if st := s.sessions[p.session]; st != nil {
				st.carried += p.cpu
			}
		}
	}
	for i := range out {
		st := s.sessions[out[i].ID]
		if st == nil {
			st = &state{fresh: true}
			s.sessions[out[i].ID] = st
		}
		cur := &out[i]
		if cur.Killing {
			cur.MemoryBytes, cur.KeptMemoryBytes = st.mem, st.kept
		} else {
			st.mem, st.kept = cur.MemoryBytes, cur.KeptMemoryBytes
		}
		// Nothing killable left (the agent gone, every member kept): as
		// exempt as a kept agent, for the limits and the pressure policy.
		cur.Exempt = cur.Exempt || cur.Procs == 0
		s.finish(cur, st, s.sums[i], s.sigs[i], s.unknown[i], now)
	}
	for id, st := range s.sessions {
		if st.sampled != s.gen {
			delete(s.sessions, id) // no member left
		}
	}
	s.read.Sweep()
	s.prev, s.next = s.next, s.prev
	s.lastAt = now
	sort.Slice(out, func(i, j int) bool { return out[i].ID.PID < out[j].ID.PID })
	s.mu.Lock()
	s.latest = out
	s.mu.Unlock()
	return out, failed
}

// finish completes one session's figures: CPU, activity, idleness.
func (s *Sampler) finish(cur *Session, st *state, cpu, sig uint64, unknown bool, now int64) {
	total := st.carried + cpu
	active := st.fresh || unknown || sig != st.sig || total > st.last
	if !st.fresh && now > s.lastAt && total >= st.last {
		cur.CPUPercent = float64(total-st.last) / float64(now-s.lastAt) * 100
	}
	if active {
		st.lastActive = now
	}
	st.last, st.sig, st.sampled, st.fresh = max(total, st.last), sig, s.gen, false
	cur.CPUSeconds = float64(st.last) / 1e9
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
