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
	rd := fakeReader{10: {MemoryBytes: 100, Ticks: 50}, 11: {MemoryBytes: 200, Ticks: 50}, 20: {MemoryBytes: 7, Ticks: 0}}
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
	rd[10] = Usage{MemoryBytes: 100, Ticks: 150}
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

func TestSamplerReadErrors(t *testing.T) {
	s := NewSampler(&fakeMembers{m: []tracker.Member{member(10, 10)}}, errReader{}, &fakeClock{now: 1})
	if out, failed := s.Sample(); failed != 1 || out[0].Procs != 1 {
		t.Errorf("%+v %d", out, failed)
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
