package tracker

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/procevents"
)

// fakeProcs is a /proc stand-in for unit tests of the table's logic; the
// real /proc is exercised by the integration tests.
type fakeProcs struct {
	stat    map[int32]ProcInfo
	cmdline map[int32]string
	keep    map[int32]bool // REAPER_KEEP=1 in the environment
	reads   int            // Stat calls
	cgroup  map[int32]string
	cgReads int // Cgroup calls
}

func newFakeProcs() *fakeProcs {
	return &fakeProcs{stat: map[int32]ProcInfo{}, cmdline: map[int32]string{}, keep: map[int32]bool{}, cgroup: map[int32]string{}}
}

func (f *fakeProcs) Stat(pid int32) (ProcInfo, error) {
	f.reads++
	if i, ok := f.stat[pid]; ok {
		return i, nil
	}
	return ProcInfo{}, fmt.Errorf("pid %d: %w", pid, ErrGone)
}

func (f *fakeProcs) Cmdline(pid int32) (string, error) {
	if _, ok := f.stat[pid]; !ok {
		return "", ErrGone
	}
	return f.cmdline[pid], nil
}

func (f *fakeProcs) KeepMarked(pid int32) (bool, error) {
	if _, ok := f.stat[pid]; !ok {
		return false, ErrGone
	}
	return f.keep[pid], nil
}

// Cgroup parses the content set in f.cgroup ("0::/" if none).
func (f *fakeProcs) Cgroup(pid int32) (cgroupinfo.Info, error) {
	f.cgReads++
	if _, ok := f.stat[pid]; !ok {
		return cgroupinfo.Info{}, ErrGone
	}
	c, ok := f.cgroup[pid]
	if !ok {
		c = "0::/\n"
	}
	return cgroupinfo.Parse([]byte(c))
}

func (f *fakeProcs) Scan() ([]ProcInfo, error) {
	var out []ProcInfo
	for _, i := range f.stat {
		out = append(out, i)
	}
	return out, nil
}

// fakeClock: boottime runs 5 s ahead of monotonic (as after a suspend).
type fakeClock struct{ now int64 }

const offset = int64(5 * time.Second)

func (c *fakeClock) Now() int64        { return c.now }
func (c *fakeClock) BootOffset() int64 { return offset }

const age = time.Hour

// shell is bash 100: in the tests' start-up scans, the parent of the
// agents they fork.
var shell = ProcInfo{PID: 100, PPID: 1, Start: FromTicks(5), Comm: "bash", State: 'S'}

func newTestTable(t *testing.T, procs *fakeProcs, under ...Ancestor) *Table {
	t.Helper()
	return NewTable(Config{Rules: DefaultRules, Under: under, MaxAge: age, Proc: procs, Clock: &fakeClock{}})
}

// scannedTable is a test table whose start-up scan saw ps.
func scannedTable(t *testing.T, ps ...ProcInfo) (*Table, *fakeProcs) {
	t.Helper()
	procs := newFakeProcs()
	for _, p := range ps {
		procs.stat[p.PID] = p
	}
	tb := newTestTable(t, procs)
	tb.Merge(must(procs.Scan()), false)
	return tb, procs
}

// forkClaude: bash 100 forks pid at ts, and pid's /proc entry shows
// claude (the caller applies the exec).
func forkClaude(tb *Table, stat map[int32]ProcInfo, pid int32, ts uint64) {
	tb.Apply(fork(100, pid, ts))
	stat[pid] = ProcInfo{PID: pid, PPID: 100, Start: FromTicks(500), Comm: "claude", State: 'S'}
}

func fork(parent, child int32, ts uint64) *procevents.Event {
	return &procevents.Event{Type: procevents.Fork, ParentPID: parent, ParentTGID: parent, PID: child, TGID: child, Timestamp: ts}
}

func threadFork(proc, thread int32, ts uint64) *procevents.Event {
	return &procevents.Event{Type: procevents.Fork, ParentPID: proc, ParentTGID: proc, PID: thread, TGID: proc, Timestamp: ts}
}

func execEv(pid int32) *procevents.Event {
	return &procevents.Event{Type: procevents.Exec, PID: pid, TGID: pid}
}

func commEv(pid, tgid int32, name string) *procevents.Event {
	ev := &procevents.Event{Type: procevents.Comm, PID: pid, TGID: tgid}
	copy(ev.Comm[:], name)
	return ev
}

func exitEv(pid, tgid int32, ts uint64) *procevents.Event {
	return &procevents.Event{Type: procevents.Exit, PID: pid, TGID: tgid, Timestamp: ts}
}

func agents(tb *Table) map[int32]Agent {
	out := map[int32]Agent{}
	for _, a := range tb.Queue().Snapshot() {
		out[a.PID] = a
	}
	return out
}

func TestForkExecExit(t *testing.T) {
	tb, procs := scannedTable(t, shell)

	tb.Apply(fork(100, 200, 1_000))
	if p, ok := tb.Lookup(200); !ok || p.Comm != "bash" || !p.Start.Exact || p.Start.NS != 1_000+offset {
		t.Fatalf("after fork: %+v %v", p, ok)
	}
	procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(500), Comm: "claude", State: 'S'} // tick of boottime offset+1000
	tb.Apply(execEv(200))
	a, ok := agents(tb)[200]
	if !ok {
		t.Fatal("claude not an agent after exec")
	}
	if a.Deadline != 1_000+offset+int64(age) || a.Rule != "claude" {
		t.Errorf("agent %+v", a)
	}
	// Exec keeps the start: a process's age does not restart on exec.
	if p, _ := tb.Lookup(200); !p.Start.Exact {
		t.Errorf("exec replaced the exact start: %+v", p.Start)
	}
	// A thread's fork, rename and exit change nothing.
	tb.Apply(threadFork(200, 201, 2_000))
	tb.Apply(commEv(201, 200, "HTTP Client"))
	tb.Apply(exitEv(201, 200, 3_000))
	if _, ok := tb.Lookup(201); ok {
		t.Error("a thread got a table entry")
	}
	if _, ok := agents(tb)[200]; !ok {
		t.Error("a thread's exit dropped the agent")
	}
	tb.Apply(exitEv(200, 200, 4_000))
	if _, ok := tb.Lookup(200); ok {
		t.Error("exited process still in the table")
	}
	if len(agents(tb)) != 0 {
		t.Error("exited agent still queued")
	}
	st := tb.Stats()
	if st.Events != [5]uint64{2, 1, 1, 2, 0} || st.Processes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A rename makes an agent (process.title); a rename away does not unmake
// it: agent status is sticky, with the rule, comm and command line it was
// matched by.
func TestRenameMakesAgentSticky(t *testing.T) {
	procs := newFakeProcs()
	tb := newTestTable(t, procs)
	procs.stat[300] = ProcInfo{PID: 300, Start: FromTicks(100), Comm: "node", State: 'S'}
	procs.cmdline[300] = "node /usr/bin/npm run agent:run:single"
	procs.stat[301] = ProcInfo{PID: 301, Start: FromTicks(100), Comm: "node", State: 'S'}
	procs.cmdline[301] = "npm install"
	tb.Merge(must(procs.Scan()), false)
	if len(agents(tb)) != 0 {
		t.Fatal("node is not an agent")
	}
	tb.Apply(commEv(300, 300, "npm run agent:r"))
	a, ok := agents(tb)[300]
	if !ok || a.Rule != "npm*:agent" {
		t.Fatalf("npm rename: %+v %v", a, ok)
	}
	// Found by a scan: the start is a whole tick, so the deadline is the end
	// of that tick plus max age, never earlier than the true start + age.
	if want := 100*Tick + Tick + int64(age); a.Deadline != want {
		t.Errorf("deadline %d, want %d", a.Deadline, want)
	}
	procs.cmdline[300] = "node"
	tb.Apply(commEv(300, 300, "node"))
	b, ok := agents(tb)[300]
	if !ok || b.Seq != a.Seq || b.Deadline != a.Deadline || b.Rule != a.Rule || b.Comm != "npm run agent:r" ||
		b.Cmdline != "node /usr/bin/npm run agent:run:single" {
		t.Errorf("renamed away: %+v %v, want the agent as it was matched: %+v", b, ok, a)
	}
	if p, _ := tb.Lookup(300); p.Comm != "node" {
		t.Errorf("the table's comm %q, want the current name node", p.Comm)
	}
	if sid, ok := tb.SessionOf(300); !ok || sid.PID != 300 {
		t.Errorf("renamed away: session %+v %v, want its own", sid, ok)
	}
	// npm without "agent" in its command line is left alone.
	tb.Apply(commEv(301, 301, "npm install"))
	if _, ok := agents(tb)[301]; ok {
		t.Error("npm install became an agent")
	}
}

func TestIdentity(t *testing.T) {
	// The scan sees pid 400 started at tick 1000 (10 s after boot).
	tb, procs := scannedTable(t, ProcInfo{PID: 400, Start: FromTicks(1000), Comm: "claude", State: 'S'})
	first := agents(tb)[400]

	// A late exit of an earlier holder of pid 400 (before tick 1000) is
	// ignored.
	tb.Apply(exitEv(400, 400, uint64(9*time.Second)-uint64(offset)))
	if _, ok := tb.Lookup(400); !ok {
		t.Fatal("stale exit removed the newer process")
	}
	// A late fork of an earlier process with the same pid is ignored too.
	tb.Apply(fork(1, 400, uint64(8*time.Second)-uint64(offset)))
	if p, _ := tb.Lookup(400); p.Start.Exact {
		t.Fatal("stale fork overwrote the newer entry")
	}
	// The fork event of the process the scan saw (inside the same tick)
	// keeps the entry and its agent.
	tb.Apply(fork(1, 400, uint64(10*time.Second+3*time.Millisecond)-uint64(offset)))
	if a := agents(tb)[400]; a.Deadline != first.Deadline {
		t.Errorf("same process re-queued: %+v vs %+v", a, first)
	}
	// A rescan showing a different start for pid 400 means reuse: the old
	// agent leaves, the new process is matched afresh.
	procs.stat[400] = ProcInfo{PID: 400, Start: FromTicks(5000), Comm: "bash", State: 'S'}
	tb.Merge(must(procs.Scan()), true)
	if len(agents(tb)) != 0 {
		t.Error("agent kept across pid reuse")
	}
	// Zombies are not live processes.
	procs.stat[400] = ProcInfo{PID: 400, Start: FromTicks(5000), Comm: "bash", State: 'Z'}
	tb.Merge(must(procs.Scan()), true)
	if _, ok := tb.Lookup(400); ok {
		t.Error("zombie kept in the table")
	}
	if st := tb.Stats(); st.Stale != 2 || st.Resyncs != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnderAndDescendants(t *testing.T) {
	procs := newFakeProcs()
	procs.stat[10] = ProcInfo{PID: 10, PPID: 1, Start: FromTicks(1), Comm: "codium", State: 'S'}
	procs.stat[11] = ProcInfo{PID: 11, PPID: 1, Start: FromTicks(1), Comm: "cron", State: 'S'}
	tb := newTestTable(t, procs, Ancestor{Comm: "codium"})
	tb.Merge(must(procs.Scan()), false)
	// Forked at monotonic 1 ns: boottime offset+1, inside tick 500.
	procs.stat[20] = ProcInfo{PID: 20, PPID: 10, Start: FromTicks(500), Comm: "claude", State: 'S'}
	procs.stat[21] = ProcInfo{PID: 21, PPID: 11, Start: FromTicks(500), Comm: "claude", State: 'S'}
	tb.Apply(fork(10, 20, 1))
	tb.Apply(execEv(20))
	tb.Apply(fork(11, 21, 1))
	tb.Apply(execEv(21))
	as := agents(tb)
	if _, ok := as[20]; !ok {
		t.Error("claude under codium not an agent")
	}
	if _, ok := as[21]; ok {
		t.Error("claude under cron is an agent despite --under codium")
	}
	// 20 → 30 → 40; when 30 exits, 40 stays a descendant of 20.
	tb.Apply(fork(20, 30, 2))
	tb.Apply(fork(30, 40, 3))
	tb.Apply(exitEv(30, 30, 4))
	ag := tb.procs[20]
	if ag.agent == nil || ag.agent.Start != (Start{NS: offset + 1, Exact: true}) {
		t.Fatalf("agent 20: %+v", ag.agent)
	}
	got := tb.Descendants(ag, ReasonMaxAge, nil)
	if len(got) != 1 || got[0].PID != 40 {
		t.Errorf("descendants %+v, want [40]", got)
	}
	// While the agent is held (being reaped) its exit keeps it linked, so
	// what it forked stays reachable.
	tb.Apply(fork(40, 50, 5))
	a := ag.agent
	if !tb.Queue().Remove(a) {
		t.Fatal("agent not queued")
	}
	tb.Apply(exitEv(20, 20, 6))
	got = tb.Descendants(ag, ReasonMaxAge, nil)
	if len(got) != 2 {
		t.Errorf("descendants of the exited, held agent: %+v", got)
	}
	tb.Release(ag)
	if _, ok := tb.Lookup(40); !ok {
		t.Error("release dropped a live descendant")
	}
}

func TestSetMaxAge(t *testing.T) {
	tb, _ := scannedTable(t, ProcInfo{PID: 7, Start: FromTicks(100), Comm: "claude", State: 'S'})
	tb.SetMaxAge(time.Minute)
	if a := agents(tb)[7]; a.Deadline != 101*Tick+int64(time.Minute) {
		t.Errorf("deadline after reload %d, want from start", a.Deadline)
	}
}

type recAlarm struct {
	next  []int64
	fired map[*Agent]bool
}

func (r *recAlarm) Set(a *Agent, next int64) { r.next = append(r.next, next) }
func (r *recAlarm) Cancel(a *Agent) bool     { return !r.fired[a] }

func TestDeadlines(t *testing.T) {
	var d Deadlines
	al := &recAlarm{fired: map[*Agent]bool{}}
	d.SetAlarm(al)
	a := &Agent{PID: 1, Deadline: 30}
	b := &Agent{PID: 2, Deadline: 10}
	c := &Agent{PID: 3, Deadline: 20}
	d.Add(a)
	d.Add(b)
	d.Add(c)
	if fmt.Sprint(al.next) != "[30 10 10]" {
		t.Errorf("alarm told %v, want [30 10 10]", al.next)
	}
	due := d.PopDue(19, nil)
	if len(due) != 1 || due[0] != b || al.next[len(al.next)-1] != 20 {
		t.Fatalf("PopDue(19) = %v, next %v", due, al.next)
	}
	if d.Remove(b) {
		t.Error("removed an agent already handed out")
	}
	// An agent whose alarm fired cannot be removed, only taken.
	al.fired[c] = true
	if d.Remove(c) || !d.Queued(c) {
		t.Error("removed an agent that fired")
	}
	if !d.Take(c) || d.Take(c) {
		t.Error("Take")
	}
	if !d.Remove(a) || d.Len() != 0 {
		t.Error("could not remove a queued agent")
	}
}

func TestStart(t *testing.T) {
	tick := FromTicks(100) // [1.00 s, 1.01 s)
	cases := []struct {
		a, b Start
		same bool
	}{
		{tick, FromTicks(100), true},
		{tick, FromTicks(101), false},
		{tick, Start{NS: 100*Tick + 5_000_000, Exact: true}, true},
		{tick, Start{NS: 101*Tick + 1_000, Exact: true}, true},                         // event stamped just after the tick ended
		{tick, Start{NS: 101*Tick + 49*int64(time.Millisecond), Exact: true}, true},    // a fork event lagging under load
		{tick, Start{NS: 101*Tick + forkSlack, Exact: true}, false},                    // beyond the bound
		{tick, Start{NS: 100*Tick - 1, Exact: true}, false},                            // stamped before the tick began
		{tick, Start{NS: 100*Tick + int64(1600*time.Millisecond), Exact: true}, false}, // the PID after a wrap
		{Start{NS: 5, Exact: true}, Start{NS: 5, Exact: true}, true},
		{Start{NS: 5, Exact: true}, Start{NS: 6, Exact: true}, false},
	}
	for _, c := range cases {
		if got := c.a.Same(c.b); got != c.same {
			t.Errorf("%+v.Same(%+v) = %v", c.a, c.b, got)
		}
		if got := c.b.Same(c.a); got != c.same {
			t.Errorf("%+v.Same(%+v) = %v", c.b, c.a, got)
		}
	}
	if tick.Latest() != 101*Tick {
		t.Errorf("Latest of a tick start = %d, want the end of the tick", tick.Latest())
	}
}

func TestParseRule(t *testing.T) {
	good := map[string]Rule{
		"claude":      {Comm: "claude"},
		"npm*":        {Comm: "npm", Prefix: true},
		"npm*:agent":  {Comm: "npm", Prefix: true, Text: "agent"},
		"node:worker": {Comm: "node", Text: "worker"},
	}
	for s, want := range good {
		r, err := ParseRule(s)
		if err != nil || r != want || r.String() != s {
			t.Errorf("ParseRule(%q) = %+v, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "*", ":x", "npm:", "a*b", "a/b", "sixteen-chars-xx"} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("ParseRule(%q) accepted", s)
		}
	}
}

// BenchmarkApply measures the table update per event on the hot path:
// fork, then exit, of processes that match no rule.
func BenchmarkApply(b *testing.B) {
	procs := newFakeProcs()
	procs.stat[1] = ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S'}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{}})
	tb.Merge(must(procs.Scan()), false)
	evs := make([]procevents.Event, 2*1000)
	for i := range 1000 {
		evs[2*i] = *fork(1, int32(1000+i), uint64(i))
		evs[2*i+1] = *exitEv(int32(1000+i), int32(1000+i), uint64(i+1))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tb.Apply(&evs[i%len(evs)])
	}
}

// A resync must not link a new process to an earlier holder of its parent's
// PID: here child 500 of agent 100 exited unseen, 500 was reused by an
// unrelated shell that forked 50, and /proc lists 50 first.
func TestMergeDoesNotAdoptIntoStaleParent(t *testing.T) {
	tb, procs := scannedTable(t, ProcInfo{PID: 100, PPID: 1, Start: FromTicks(10), Comm: "claude", State: 'S'})
	tb.Apply(fork(100, 500, uint64(time.Second)))
	procs.stat[500] = ProcInfo{PID: 500, PPID: 1, Start: FromTicks(900), Comm: "bash", State: 'S'}
	procs.stat[50] = ProcInfo{PID: 50, PPID: 500, Start: FromTicks(901), Comm: "vim", State: 'S'}
	tb.Merge([]ProcInfo{procs.stat[50], procs.stat[100], procs.stat[500]}, true)
	if got := tb.Descendants(tb.procs[100], ReasonMaxAge, nil); len(got) != 0 {
		t.Errorf("agent 100 adopted %+v", got)
	}
	if p := tb.procs[50]; p.parent == nil || p.parent.PID != 500 || p.parent.Comm != "bash" {
		t.Errorf("50 not linked to the new 500: %+v", p.parent)
	}
}

// A rename by an earlier holder of a PID, still queued after a resync saw
// the new holder, must not rename (and so make an agent of) the new one.
func TestStaleCommIgnored(t *testing.T) {
	procs := newFakeProcs()
	tb := newTestTable(t, procs)
	procs.stat[700] = ProcInfo{PID: 700, PPID: 1, Start: FromTicks(900), Comm: "python3", State: 'S'}
	tb.Merge(must(procs.Scan()), true)
	tb.Apply(commEv(700, 700, "claude")) // stamped at boot offset + 0: long before tick 900
	if tb.Queue().Len() != 0 {
		t.Error("a stale rename made an agent")
	}
	if p, _ := tb.Lookup(700); p.Comm != "python3" {
		t.Errorf("comm %q", p.Comm)
	}
}

// BenchmarkDecodeApply is the event path without the socket: decode a
// proc_event from its bytes and update the table, for a fork/exit cycle of
// processes that match no rule (the common case under a fork storm).
func BenchmarkDecodeApply(b *testing.B) {
	procs := newFakeProcs()
	procs.stat[1] = ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S'}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{}})
	tb.Merge(must(procs.Scan()), false)
	const n = 1000
	msgs := make([][]byte, 0, 2*n)
	for i := range n {
		pid := uint32(1000 + i)
		msgs = append(msgs, rawEvent(procevents.Fork, uint64(i), 1, 1, pid, pid), rawEvent(procevents.Exit, uint64(i+1), pid, pid, 0, 0))
	}
	var ev procevents.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := procevents.Decode(msgs[i%len(msgs)], &ev); err != nil {
			b.Fatal(err)
		}
		tb.Apply(&ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// rawEvent builds cn_msg + proc_event bytes: for a fork a, b are the parent
// and c, d the child; for an exit a, b are the process.
func rawEvent(ty procevents.Type, ts uint64, a, b, c, d uint32) []byte {
	buf := make([]byte, 20+40)
	le := binary.LittleEndian
	le.PutUint32(buf[0:], 1)
	le.PutUint32(buf[4:], 1)
	le.PutUint16(buf[16:], 40)
	p := buf[20:]
	le.PutUint32(p[0:], uint32(ty))
	le.PutUint64(p[8:], ts)
	le.PutUint32(p[16:], a)
	le.PutUint32(p[20:], b)
	le.PutUint32(p[24:], c)
	le.PutUint32(p[28:], d)
	return buf
}

func TestParseStat(t *testing.T) {
	// A kernel thread and a process whose comm holds ") (" and spaces.
	kt := []byte("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 7 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
	odd := []byte("4242 (a) (b c) Z 17 4242 4242 0 -1 4194560 90 0 0 0 0 0 0 0 20 0 1 0 123456 0 0\n")
	got, err := ParseStat(kt)
	if err != nil || got != (ProcInfo{PID: 2, PPID: 0, Comm: "kthreadd", State: 'S', Kthread: true, Threads: 1, Start: FromTicks(7)}) {
		t.Errorf("kthreadd: %+v %v", got, err)
	}
	got, err = ParseStat(odd)
	if err != nil || got != (ProcInfo{PID: 4242, PPID: 17, Comm: "a) (b c", State: 'Z', Threads: 1, Start: FromTicks(123456)}) {
		t.Errorf("odd comm: %+v %v", got, err)
	}
	// A process whose leader called pthread_exit: zombie leader
	// (PF_EXITING in flags 4194628), two threads left.
	gone := []byte("77 (claude) Z 1 77 77 0 -1 4194628 0 0 0 0 0 0 0 0 20 0 3 0 900 0 0\n")
	got, err = ParseStat(gone)
	if err != nil || got != (ProcInfo{PID: 77, PPID: 1, Comm: "claude", State: 'Z', Exiting: true, Threads: 3, Start: FromTicks(900)}) || !got.Live() {
		t.Errorf("leader gone: %+v %v", got, err)
	}
	for _, bad := range []string{"", "12 (x", "x (y) S 1 2", "1 (y) S 1 2 3 4 5 6", "1 (y) S z 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 5"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (a) (b c) Z 17 4242 4242 0 -1 4194560 90 0 0 0 0 0 0 0 20 0 1 0 123456 0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseStat(b) })
}

func TestScanThisMachine(t *testing.T) {
	p, err := NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.Scan()
	if err != nil {
		t.Fatal(err)
	}
	self := int32(os.Getpid())
	for _, i := range all {
		if i.PID == self {
			if i.PPID != int32(os.Getppid()) || i.State != 'R' && i.State != 'S' || i.Start.NS == 0 {
				t.Errorf("self: %+v", i)
			}
			return
		}
	}
	t.Errorf("scan of %d processes lacks this one", len(all))
}

func BenchmarkScan(b *testing.B) {
	p, _ := NewProcFS("/proc")
	for b.Loop() {
		if _, err := p.Scan(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCleanCmdline(t *testing.T) {
	long := strings.Repeat("a", MaxCmdline-1) + "é" // 2-byte rune across the cap
	for _, c := range []struct{ in, want string }{
		{"node /usr/bin/npm run agent", "node /usr/bin/npm run agent"},
		{"a\x00b\x00", "a b "},
		{"bad \xff\xfe utf8", "bad \uFFFD utf8"},
		{long, strings.Repeat("a", MaxCmdline-1)},
		{strings.Repeat("x", 10000), strings.Repeat("x", MaxCmdline)},
	} {
		got := CleanCmdline(c.in)
		if got != c.want || !utf8.ValidString(got) || len(got) > MaxCmdline || strings.IndexByte(got, 0) >= 0 {
			t.Errorf("CleanCmdline(%.40q) = %.40q (%d bytes), want %.40q", c.in, got, len(got), c.want)
		}
	}
}

// A reload racing a match: whichever order the steps of SetMaxAge (store,
// reschedule) and of a match (decide, queue) interleave in, the agent ends
// up on the new deadline.
func TestSetMaxAgeRacingMatch(t *testing.T) {
	const longer = 3 * time.Hour
	for _, c := range []struct {
		name  string
		setup func(tb *Table, match func())
	}{
		// The reload runs entirely between the match's decision and its queueing.
		{"reload inside match", func(tb *Table, match func()) {
			testHookBeforeQueue = func() { testHookBeforeQueue = nil; tb.SetMaxAge(longer) }
			match()
		}},
		// The match runs entirely between the reload's store and reschedule.
		{"match inside reload", func(tb *Table, match func()) {
			testHookBeforeResched = func() { testHookBeforeResched = nil; match() }
			tb.SetMaxAge(longer)
		}},
		{"match then reload", func(tb *Table, match func()) { match(); tb.SetMaxAge(longer) }},
		{"reload then match", func(tb *Table, match func()) { tb.SetMaxAge(longer); match() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() { testHookBeforeQueue, testHookBeforeResched = nil, nil }()
			tb, _ := scannedTable(t, ProcInfo{PID: 9, Start: FromTicks(100), Comm: "node", State: 'S'})
			c.setup(tb, func() { tb.Apply(commEv(9, 9, "claude")) })
			a, ok := agents(tb)[9]
			if want := 101*Tick + int64(longer); !ok || a.Deadline != want {
				t.Errorf("agent %+v (queued %v): deadline %d, want %d (start + the new max age)", a, ok, a.Deadline, want)
			}
		})
	}
}

// A fork event lagging the kernel's start_boottime (its /proc tick) by up to
// forkSlack is the same process, whichever the table saw first; a PID reused
// after a wrap (1.6 s under a fork storm) is a new one.
func TestForkEventLag(t *testing.T) {
	const lag = 45 * time.Millisecond // past the end of the /proc tick
	mono := func(boot int64) uint64 { return uint64(boot - offset) }

	// Scan first, then the late fork event: the agent stays, with its
	// deadline (no drop and re-add), and learns the exact start.
	tb, procs := scannedTable(t, ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S'},
		ProcInfo{PID: 500, PPID: 1, Start: FromTicks(1000), Comm: "claude", State: 'S'})
	before := agents(tb)[500]
	tb.Apply(fork(1, 500, mono(1001*Tick+int64(lag))))
	if p, _ := tb.Lookup(500); !p.Start.Exact || p.Comm != "claude" {
		t.Errorf("late fork event replaced the scanned agent: %+v", p)
	}
	if a, ok := agents(tb)[500]; !ok || a.Seq != before.Seq {
		t.Errorf("agent re-queued by a late fork event: %+v, was %+v", a, before)
	}

	// Fork event first, then exec reading /proc: the entry and its exact
	// start stay.
	ev := mono(2001*Tick + int64(lag))
	tb.Apply(fork(1, 600, ev))
	procs.stat[600] = ProcInfo{PID: 600, PPID: 1, Start: FromTicks(2000), Comm: "claude", State: 'S'}
	tb.Apply(execEv(600))
	a, ok := agents(tb)[600]
	if !ok || !a.Start.Exact || a.Start.NS != int64(ev)+offset || a.Deadline != int64(ev)+offset+int64(age) {
		t.Errorf("exec after a late fork event: %+v %v", a, ok)
	}
	if st := tb.Stats(); st.Stale != 0 {
		t.Errorf("stale %d, want 0", st.Stale)
	}

	// PID 600 reused after a wrap: /proc at exec shows a start 1.6 s later.
	procs.stat[600] = ProcInfo{PID: 600, PPID: 1, Start: FromTicks(2160), Comm: "claude", State: 'S'}
	tb.Apply(execEv(600))
	if a := agents(tb)[600]; a.Start != FromTicks(2160) {
		t.Errorf("reused PID kept the old identity: %+v", a.Start)
	}
	// PID 500 reused: its new fork event is 1.6 s after the scanned tick.
	tb.Apply(fork(1, 500, mono(1000*Tick+int64(1600*time.Millisecond))))
	if p, _ := tb.Lookup(500); p.Comm != "init" || len(agents(tb)) != 1 {
		t.Errorf("fork after a wrap did not replace the old holder: %+v", p)
	}
}

// After a resync, events still queued from before the scan began are
// ignored: the scan shows their effect already, and applied late they would
// resurrect a process the scan saw gone, rename the new holder of a PID, or
// remove it. The events go through their wire bytes.
func TestResyncIgnoresEventsBeforeScan(t *testing.T) {
	const scanStart = int64(100 * time.Second) // boottime
	ms := int64(time.Millisecond)
	apply := func(tb *Table, ev procevents.Event) {
		ev.Timestamp = uint64(int64(ev.Timestamp) - offset) // boottime → monotonic
		var got procevents.Event
		if err := procevents.Decode(procevents.Encode(nil, &ev), &got); err != nil {
			t.Fatal(err)
		}
		tb.Apply(&got)
	}
	procs := newFakeProcs()
	procs.stat[1] = ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S'}
	// 300 and 400 were reused shortly before the scan, in the tick of the
	// earlier holders' last events.
	procs.stat[300] = ProcInfo{PID: 300, PPID: 1, Start: FromTicks(uint64((scanStart - 5*ms) / Tick)), Comm: "python3", State: 'S'}
	procs.stat[400] = ProcInfo{PID: 400, PPID: 1, Start: FromTicks(uint64((scanStart - 5*ms) / Tick)), Comm: "bash", State: 'S'}
	tb := newTestTable(t, procs)
	tb.MergeAt(must(procs.Scan()), true, scanStart)

	var comm [16]byte
	copy(comm[:], "claude")
	// Queued before the scan: the fork of 200 (which exited, its exit lost
	// in the overrun), the earlier 300's rename, an exec and
	// the earlier 400's exit.
	apply(tb, procevents.Event{Type: procevents.Fork, Timestamp: uint64(scanStart - 4*ms), ParentPID: 1, ParentTGID: 1, PID: 200, TGID: 200})
	apply(tb, procevents.Event{Type: procevents.Comm, Timestamp: uint64(scanStart - 3*ms), PID: 300, TGID: 300, Comm: comm})
	apply(tb, procevents.Event{Type: procevents.Exec, Timestamp: uint64(scanStart - 2*ms), PID: 400, TGID: 400})
	apply(tb, procevents.Event{Type: procevents.Exit, Timestamp: uint64(scanStart - 1*ms), PID: 400, TGID: 400})
	// After the scan began: applied.
	apply(tb, procevents.Event{Type: procevents.Fork, Timestamp: uint64(scanStart + 1*ms), ParentPID: 1, ParentTGID: 1, PID: 500, TGID: 500})

	if _, ok := tb.Lookup(200); ok {
		t.Error("a fork from before the scan resurrected 200")
	}
	if p, ok := tb.Lookup(300); !ok || p.Comm != "python3" || tb.Queue().Len() != 0 {
		t.Errorf("a rename from before the scan applied to the new 300: %+v", p)
	}
	if _, ok := tb.Lookup(400); !ok {
		t.Error("an exit from before the scan removed the new 400")
	}
	if _, ok := tb.Lookup(500); !ok {
		t.Error("a fork after the scan began was ignored")
	}
	if st := tb.Stats(); st.Stale != 4 {
		t.Errorf("stale %d, want 4", st.Stale)
	}
}

// The exit event of a thread-group leader is not the process's exit while
// other threads run: pthread_exit in the leader, or execve in another
// thread (de_thread kills the leader, the exec event follows).
func TestLeaderExit(t *testing.T) {
	tb, procs := scannedTable(t, ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S', Threads: 1})
	tracked := func(pid int32) bool { _, ok := agents(tb)[pid]; return ok }
	start := func(pid int32, ts uint64, threads ...int32) {
		t.Helper()
		tb.Apply(fork(1, pid, ts))
		procs.stat[pid] = ProcInfo{PID: pid, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'S', Threads: 1}
		tb.Apply(execEv(pid))
		for _, th := range threads {
			tb.Apply(threadFork(pid, th, ts+1))
		}
		if !tracked(pid) {
			t.Fatalf("%d not an agent", pid)
		}
	}

	// A single-threaded process's exit costs no /proc read.
	start(150, 10)
	reads := procs.reads
	tb.Apply(exitEv(150, 150, 20))
	if tracked(150) || procs.reads != reads {
		t.Errorf("single-threaded exit: tracked %v, %d /proc reads", tracked(150), procs.reads-reads)
	}

	// pthread_exit in the leader of 200, threads 201 and 202 run on.
	start(200, 10, 201, 202)
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'Z', Exiting: true, Threads: 3}
	tb.Apply(exitEv(200, 200, 20))
	if !tracked(200) {
		t.Fatal("leader exit dropped a process whose threads run on")
	}
	// 201 exits and is released before we look: 202 is left.
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'Z', Exiting: true, Threads: 2}
	tb.Apply(exitEv(201, 200, 30))
	if !tracked(200) {
		t.Fatal("dropped while thread 202 runs")
	}
	// 202, the last, exits; /proc still counts it (not yet released).
	tb.Apply(exitEv(202, 200, 40))
	if tracked(200) {
		t.Error("still tracked after its last thread exited")
	}
	if _, ok := tb.Lookup(200); ok {
		t.Error("still in the table after its last thread exited")
	}

	// execve in thread 301 of 300: de_thread kills the leader (exit event
	// with pid == tgid), 301 takes PID 300 and its start, the exec event
	// follows.
	start(300, 10, 301)
	procs.stat[300] = ProcInfo{PID: 300, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'R', Threads: 1}
	tb.Apply(exitEv(300, 300, 20))
	if !tracked(300) {
		t.Fatal("a non-leader thread's exec dropped the process")
	}
	tb.Apply(execEv(300))
	if p, _ := tb.Lookup(300); !tracked(300) || p.leaderGone || p.threads != 0 {
		t.Errorf("after the exec: tracked %v, %+v", tracked(300), p)
	}
	reads = procs.reads
	tb.Apply(exitEv(300, 300, 30))
	if tracked(300) || procs.reads != reads {
		t.Error("the exec'd process's own exit did not remove it at once")
	}

	// exit_group of a multi-threaded process: the leader's exit event
	// comes while the others are still counted; their exits finish it.
	start(400, 10, 401, 402)
	procs.stat[400] = ProcInfo{PID: 400, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'R', Exiting: true, Threads: 3}
	tb.Apply(exitEv(400, 400, 20))
	tb.Apply(exitEv(401, 400, 20))
	delete(procs.stat, 400) // reaped by its parent meanwhile
	tb.Apply(exitEv(402, 400, 20))
	if tracked(400) {
		t.Error("exit_group left the process tracked")
	}
	// ... or the others were gone before the leader's event was read.
	start(450, 10, 451)
	tb.Apply(exitEv(451, 450, 20))
	procs.stat[450] = ProcInfo{PID: 450, PPID: 1, Start: FromTicks(500), Comm: "claude", State: 'Z', Exiting: true, Threads: 1}
	tb.Apply(exitEv(450, 450, 20))
	if tracked(450) {
		t.Error("exit after its threads left the process tracked")
	}

	// A scan finds a process whose leader is a zombie with a live thread:
	// alive, and gone when that thread exits.
	procs.stat[500] = ProcInfo{PID: 500, PPID: 1, Start: FromTicks(600), Comm: "claude", State: 'Z', Exiting: true, Threads: 2}
	tb.Merge(must(procs.Scan()), true)
	if !tracked(500) {
		t.Fatal("scan dropped a process whose leader is a zombie but a thread runs")
	}
	tb.Apply(exitEv(501, 500, uint64(6*time.Second)))
	if tracked(500) {
		t.Error("still tracked after the last thread found by the scan exited")
	}
	// A zombie with no other thread is dead.
	procs.stat[600] = ProcInfo{PID: 600, PPID: 1, Start: FromTicks(600), Comm: "claude", State: 'Z', Threads: 1}
	tb.Merge(must(procs.Scan()), true)
	if tracked(600) {
		t.Error("a plain zombie tracked")
	}
}

// BenchmarkApplyThreads is a thread's fork and exit in a tracked process:
// now counted (lock + lookup), where they used to be dropped at once.
func BenchmarkApplyThreads(b *testing.B) {
	procs := newFakeProcs()
	procs.stat[1] = ProcInfo{PID: 1, Start: FromTicks(1), Comm: "init", State: 'S', Threads: 1}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{}})
	tb.Merge(must(procs.Scan()), false)
	evs := []procevents.Event{*threadFork(1, 2, 10), *exitEv(2, 1, 11)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tb.Apply(&evs[i&1])
	}
}
