package resource

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

type fakeMembers struct{ m []tracker.Member }

func (f *fakeMembers) SessionMembers(buf []tracker.Member) []tracker.Member {
	return append(buf, f.m...)
}

type fakeReader map[int32]Usage

func (f fakeReader) Sweep() {}

func (f fakeReader) Read(pid int32, _ tracker.Start) (Usage, error) {
	u, ok := f[pid]
	if !ok {
		return Usage{}, fmt.Errorf("pid %d: %w", pid, tracker.ErrGone)
	}
	return u, nil
}

type fakeClock struct{ now int64 }

func (c *fakeClock) Now() int64 { return c.now }

func member(sess, pid int32) tracker.Member {
	return tracker.Member{Session: tracker.SessionID{PID: sess, Start: tracker.Start{NS: int64(sess)}}, PID: pid,
		Start: tracker.Start{NS: int64(pid)}, Comm: "claude", AgentAlive: true}
}

func TestSamplerFigures(t *testing.T) {
	mem := &fakeMembers{m: []tracker.Member{member(10, 10), member(10, 11), member(20, 20)}}
	rd := fakeReader{10: {MemoryBytes: 100, CPUNanos: 5e8}, 11: {MemoryBytes: 200, CPUNanos: 5e8}, 20: {MemoryBytes: 7, CPUNanos: 0}}
	clk := &fakeClock{now: int64(time.Hour)}
	s := NewSampler(mem, rd, clk)
	out, failed := s.Sample()
	if failed != 0 || len(out) != 2 {
		t.Fatalf("%+v %d", out, failed)
	}
	if a := out[0]; a.ID.PID != 10 || a.MemoryBytes != 300 || a.Procs != 2 || a.CPUSeconds != 1 || a.IdleSeconds != 0 || a.Started != 10 {
		t.Errorf("session 10: %+v", a)
	}
	// 2 s later: 10 used 1 s of CPU (100 ticks), 20 none.
	clk.now += int64(2 * time.Second)
	rd[10] = Usage{MemoryBytes: 100, CPUNanos: 15e8}
	out, _ = s.Sample()
	if a := out[0]; a.CPUSeconds != 2 || a.CPUPercent != 50 || a.IdleSeconds != 0 {
		t.Errorf("session 10 busy: %+v", a)
	}
	if b := out[1]; b.IdleSeconds != 2 || b.CPUPercent != 0 {
		t.Errorf("session 20 idle: %+v", b)
	}
	// 11 exits: its CPU is carried, the exit is activity.
	clk.now += int64(2 * time.Second)
	mem.m = []tracker.Member{member(10, 10), member(20, 20)}
	delete(rd, 11)
	out, _ = s.Sample()
	if a := out[0]; a.CPUSeconds != 2 || a.Procs != 1 || a.MemoryBytes != 100 || a.IdleSeconds != 0 {
		t.Errorf("session 10 after an exit: %+v", a)
	}
	if b := out[1]; b.IdleSeconds != 4 {
		t.Errorf("session 20 idle: %+v", b)
	}
	// Nothing moves: idle counts from the last activity, a sample.
	clk.now += int64(3 * time.Second)
	out, _ = s.Sample()
	if a := out[0]; a.IdleSeconds != 3 || a.CPUSeconds != 2 {
		t.Errorf("session 10 idle: %+v", a)
	}
	// A fork and an exit in one interval (same count) is activity.
	clk.now += int64(time.Second)
	mem.m = []tracker.Member{member(10, 12), member(20, 20)}
	rd[12] = Usage{}
	out, _ = s.Sample()
	if a := out[0]; a.IdleSeconds != 0 {
		t.Errorf("session 10 after fork+exit: %+v", a)
	}
	// A session that ended is forgotten; Latest is the last sample.
	mem.m = mem.m[1:]
	out, _ = s.Sample()
	if len(out) != 1 || len(s.Latest()) != 1 || len(s.sessions) != 1 {
		t.Errorf("after session 10 ended: %+v", out)
	}
}

type errReader struct{}

func (errReader) Read(int32, tracker.Start) (Usage, error) { return Usage{}, errors.New("EACCES") }
func (errReader) Sweep()                                   {}

func TestSamplerReadErrors(t *testing.T) {
	s := NewSampler(&fakeMembers{m: []tracker.Member{member(10, 10)}}, errReader{}, &fakeClock{now: 1})
	if out, failed := s.Sample(); failed != 1 || out[0].Procs != 1 {
		t.Errorf("%+v %d", out, failed)
	}
}

// countingReader counts reads per pid and fails some with a given error.
type countingReader struct {
	fakeReader
	reads map[int32]int
	fail  map[int32]error
}

func (c *countingReader) Read(pid int32, start tracker.Start) (Usage, error) {
	c.reads[pid]++
	if err := c.fail[pid]; err != nil {
		return Usage{}, err
	}
	return c.fakeReader.Read(pid, start)
}

// Kept members count apart: the limits and the pressure policy see only
// the killable figures; a session with nothing killable is exempt.
func TestSamplerKept(t *testing.T) {
	kept := func(m tracker.Member) tracker.Member { m.Kept = true; return m }
	mem := &fakeMembers{m: []tracker.Member{member(10, 10), kept(member(10, 11)), kept(member(10, 12))}}
	rd := fakeReader{10: {MemoryBytes: 100}, 11: {MemoryBytes: 7 << 30}, 12: {MemoryBytes: 1 << 30}}
	s := NewSampler(mem, rd, &fakeClock{now: 1})
	out, _ := s.Sample()
	if a := out[0]; a.MemoryBytes != 100 || a.Procs != 1 || a.KeptMemoryBytes != 8<<30 || a.KeptProcs != 2 || a.Exempt {
		t.Fatalf("session with kept members: %+v", a)
	}
	if c := (Limits{MaxMemory: 6 << 30, MaxProcs: 1}).Check(&out[0]); len(c) != 0 {
		t.Errorf("kept members crossed a limit: %+v", c)
	}
	// The agent exits; only kept members are left: exempt.
	mem.m = mem.m[1:]
	for i := range mem.m {
		mem.m[i].AgentAlive = false
	}
	out, _ = s.Sample()
	if a := out[0]; !a.Exempt || a.Procs != 0 || a.KeptProcs != 2 {
		t.Fatalf("only kept members: %+v", a)
	}
	if c := (Limits{MaxMemory: 1, Idle: time.Nanosecond}).Check(&out[0]); len(c) != 0 {
		t.Errorf("nothing killable crossed a limit: %+v", c)
	}
}

// A session being killed is not read (only counted); its memory is the last
// sample's, its CPU never counted twice when reading resumes.
func TestSamplerKilling(t *testing.T) {
	mem := &fakeMembers{m: []tracker.Member{member(10, 10), member(10, 11)}}
	rd := &countingReader{fakeReader: fakeReader{10: {MemoryBytes: 100, CPUNanos: 1e9}, 11: {MemoryBytes: 200, CPUNanos: 1e9}},
		reads: map[int32]int{}}
	clk := &fakeClock{now: 1}
	s := NewSampler(mem, rd, clk)
	s.Sample()
	for i := range mem.m {
		mem.m[i].Killing = true
	}
	mem.m = append(mem.m, member(10, 13))
	mem.m[2].Killing = true
	rd.fakeReader[13] = Usage{MemoryBytes: 1 << 20, CPUNanos: 5e8}
	clk.now += 2e9
	out, _ := s.Sample()
	if rd.reads[10] != 1 || rd.reads[11] != 1 || rd.reads[13] != 0 {
		t.Errorf("members of a session being killed were read: %v", rd.reads)
	}
	if a := out[0]; !a.Killing || a.Procs != 3 || a.MemoryBytes != 300 || a.CPUSeconds != 2 {
		t.Errorf("session being killed: %+v", a)
	}
	// The kill is over (13 survived, 10 and 11 are gone): read again, CPU
	// counted once.
	mem.m = []tracker.Member{member(10, 13)}
	clk.now += 2e9
	out, _ = s.Sample()
	if a := out[0]; a.Killing || a.Procs != 1 || a.MemoryBytes != 1<<20 || a.CPUSeconds != 2.5 {
		t.Errorf("after the kill: %+v", a)
	}
}

// A member that cannot be read (not gone: EMFILE, EACCES) makes its session
// active: a busy session is never idle-killed for a failed read.
func TestSamplerUnknownIsActive(t *testing.T) {
	mem := &fakeMembers{m: []tracker.Member{member(10, 10), member(10, 11)}}
	rd := &countingReader{fakeReader: fakeReader{10: {CPUNanos: 1e9}, 11: {CPUNanos: 1e9}}, reads: map[int32]int{},
		fail: map[int32]error{}}
	clk := &fakeClock{now: 1}
	s := NewSampler(mem, rd, clk)
	s.Sample()
	rd.fail[11] = fmt.Errorf("open /proc/11/statm: %w", errors.New("too many open files"))
	for i := 0; i < 5; i++ {
		clk.now += int64(time.Minute)
		out, failed := s.Sample()
		if failed != 1 || out[0].IdleSeconds != 0 {
			t.Fatalf("sample %d: %+v failed %d; want active", i, out[0], failed)
		}
		if c := (Limits{Idle: time.Minute}).Check(&out[0]); len(c) != 0 {
			t.Fatalf("idle crossing with an unreadable member: %+v", c)
		}
	}
	delete(rd.fail, 11)
	clk.now += int64(time.Minute)
	s.Sample()
	clk.now += int64(time.Minute)
	if out, _ := s.Sample(); out[0].IdleSeconds != 120 { // quiet since the last unknown sample
		t.Errorf("readable again and quiet: %+v", out[0])
	}
}

func TestLimits(t *testing.T) {
	l := Limits{MaxMemory: 200 << 20, MaxProcs: 50, Idle: time.Minute}
	s := Session{MemoryBytes: 300 << 20, Procs: 80, IdleSeconds: 60}
	c := l.Check(&s)
	if len(c) != 3 || c[0].Reason != tracker.ReasonMemory || c[1].Reason != tracker.ReasonProcs || c[2].Reason != tracker.ReasonIdle {
		t.Fatalf("%+v", c)
	}
	if f := c[0].Figures; f.MemoryBytes != 300<<20 || f.Procs != 80 || f.Details["limit"] != 200<<20 {
		t.Errorf("figures: %+v", f)
	}
	if c := l.Check(&Session{MemoryBytes: 200 << 20, Procs: 50, IdleSeconds: 59.9}); len(c) != 0 {
		t.Errorf("at the limits: %+v", c)
	}
	s.Exempt = true
	if c := l.Check(&s); len(c) != 0 {
		t.Errorf("exempt: %+v", c)
	}
	if c := (Limits{}).Check(&Session{MemoryBytes: 1 << 40, Procs: 1 << 20, IdleSeconds: 1e9}); len(c) != 0 {
		t.Errorf("no limits: %+v", c)
	}
}

func TestParseStat(t *testing.T) {
	b := []byte("19048 (a) b) c) R 18945 18945 12542 0 -1 4194304 101 0 0 0 7 3 0 0 20 -5 1 0 933537 3133440 383 18446744073709551615 94025051701248\n")
	st, err := ParseStat(b)
	if err != nil || st.UTime != 7 || st.STime != 3 || st.StartTicks != 933537 || st.RSSPages != 383 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{"", "1 (x)", "1 (x) R 1 2 3", "1 (x) R 1 1 1 0 -1 4 1 0 0 0 x 3 0 0 20 0 1 0 9 3 3 1\n"} {
		if _, err := ParseStat([]byte(bad)); !errors.Is(err, ErrParse) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	r, sh, err := ParseStatm([]byte("3059 383 327 5 0 107 0\n"))
	if err != nil || r != 383 || sh != 327 {
		t.Errorf("statm: %d %d %v", r, sh, err)
	}
	if _, _, err := ParseStatm([]byte("12 x")); !errors.Is(err, ErrParse) {
		t.Errorf("bad statm: %v", err)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (x) R 1 1 1 0 -1 4 1 0 0 0 7 3 0 0 20 0 1 0 9 3 3 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseStat(b) })
}
