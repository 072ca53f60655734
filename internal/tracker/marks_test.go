package tracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// markProcs counts environment reads and can fail them.
type markProcs struct {
	*fakeProcs
	envReads map[int32]int
	envErr   map[int32]error
	cmdReads int
}

func (m *markProcs) KeepMarked(pid int32) (bool, error) {
	m.envReads[pid]++
	if err := m.envErr[pid]; err != nil {
		return false, err
	}
	return m.fakeProcs.KeepMarked(pid)
}

func (m *markProcs) Cmdline(pid int32) (string, error) {
	m.cmdReads++
	return m.fakeProcs.Cmdline(pid)
}

func (m *markProcs) total() (n int) {
	for _, c := range m.envReads {
		n += c
	}
	return n
}

// markTable is sessionTable (bash 100, agent claude 200, --keep keepme)
// over a markProcs.
func markTable(t *testing.T, cfg Config) (*Table, *markProcs, *fakeClock) {
	t.Helper()
	procs := &markProcs{fakeProcs: newFakeProcs(), envReads: map[int32]int{}, envErr: map[int32]error{}}
	clock := &fakeClock{now: offset + 1_000}
	procs.stat[100] = shell
	cfg.Rules, cfg.MaxAge, cfg.Proc, cfg.Clock = DefaultRules, age, procs, clock
	cfg.Leftovers, cfg.LeftoverGrace = true, grace
	if cfg.Keep == nil {
		cfg.Keep = []Rule{must(ParseRule("keepme"))}
	}
	tb := NewTable(cfg)
	tb.Merge(must(procs.Scan()), false)
	forkClaude(tb, procs.stat, 200, 1_000)
	tb.Apply(execEv(200))
	return tb, procs, clock
}

// forkOnly applies a fork and gives the child a /proc entry (as its
// parent's copy: same name) without an exec.
func forkOnly(tb *Table, procs *markProcs, parent, child int32, ts uint64) {
	procs.stat[child] = ProcInfo{PID: child, PPID: parent, Start: FromTicks(500), Comm: procs.stat[parent].Comm, State: 'S'}
	tb.Apply(fork(parent, child, ts))
}

// execAs makes pid exec comm, with (marked) or without REAPER_KEEP=1.
func execAs(tb *Table, procs *markProcs, pid int32, comm string, marked bool) {
	info := procs.stat[pid]
	info.Comm = comm
	procs.stat[pid] = info
	procs.keep[pid] = marked
	tb.Apply(execEv(pid))
}

func exitNow(tb *Table, procs *markProcs, pid int32, ts uint64) {
	delete(procs.stat, pid)
	tb.Apply(exitEv(pid, pid, ts))
}

// spawnMarked spawns child as spawn does, with REAPER_KEEP=1 in its
// environment.
func spawnMarked(tb *Table, procs *markProcs, parent, child int32, ts uint64, comm string) {
	spawn(tb, procs.fakeProcs, parent, child, ts, comm)
	procs.keep[child] = true
}

// markedShellChild: sh 220, spawned with REAPER_KEEP=1, forks 221, which
// execs comm with a clean environment.
func markedShellChild(tb *Table, procs *markProcs, comm string) {
	spawnMarked(tb, procs, 200, 220, 2_000, "sh")
	forkOnly(tb, procs, 220, 221, 2_100)
	execAs(tb, procs, 221, comm, false)
}

// takes is what a kill of a's tree for why takes (Table.Descendants).
func takes(tb *Table, a Agent, why Reason) map[int32]bool {
	return targets(tb.Descendants(a.Proc(), why, nil))
}

func targets(ts []Target) map[int32]bool {
	out := map[int32]bool{}
	for _, t := range ts {
		out[t.PID] = true
	}
	return out
}

// A child forked by a marked process keeps the mark after it execs with a
// clean environment (sudo, env -i) and its parent exits, whether the
// parent could still be read when the fork was applied or was gone by
// then (the child's copy of its environment is read instead).
func TestMarkInheritedAtFork(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	spawn(tb, procs.fakeProcs, 200, 210, 2_000, "sleep") // plain: a leftover

	// Parent readable at the fork.
	spawnMarked(tb, procs, 200, 220, 3_000, "sh") // REAPER_KEEP=1 sh -c '...'
	procs.stat[220] = ProcInfo{PID: 220, PPID: 200, Start: FromTicks(500), Comm: "sh", State: 'S'}
	forkOnly(tb, procs, 220, 221, 3_100)
	forkOnly(tb, procs, 220, 222, 3_200)
	execAs(tb, procs, 221, "sleep", false)
	execAs(tb, procs, 222, "sleep", false)
	exitNow(tb, procs, 220, 3_300)
	if n := procs.envReads[220]; n != 1 {
		t.Errorf("the marked parent's environment read %d times for two forks, want once", n)
	}

	// Parent gone before its fork was applied: never read.
	spawnMarked(tb, procs, 200, 230, 4_000, "sh")
	procs.stat[231] = ProcInfo{PID: 231, PPID: 230, Start: FromTicks(500), Comm: "sh", State: 'S'}
	procs.keep[231] = true // its copy of the parent's environment
	delete(procs.stat, 230)
	tb.Apply(fork(230, 231, 4_100))
	execAs(tb, procs, 231, "sleep", false)
	tb.Apply(exitEv(230, 230, 4_200))

	// Its exec unread too (it exited before the daemon read /proc): what
	// it held from its parent at fork (an unmarked environment) is void.
	tb.Apply(fork(200, 240, 5_000))
	procs.stat[241] = ProcInfo{PID: 241, PPID: 240, Start: FromTicks(500), Comm: "sh", State: 'S'}
	procs.keep[241] = true
	tb.Apply(execEv(240)) // REAPER_KEEP=1 sh -c 'x & exit', gone already
	tb.Apply(fork(240, 241, 5_100))
	execAs(tb, procs, 241, "sleep", false)
	tb.Apply(exitEv(240, 240, 5_200))

	lo := agentExit(tb)
	if _, ok := lo[210]; !ok {
		t.Errorf("the plain child is not a leftover: %v", lo)
	}
	for _, pid := range []int32{221, 222, 231, 241} {
		if _, ok := lo[pid]; ok {
			t.Errorf("%d, forked by a marked parent that exited first, was queued as a leftover", pid)
		}
	}
}

// A mark read once survives renames (only exec changes the environment);
// keep rules follow the name: a process a rule kept by name is a candidate
// once it renames away, while what it forked meanwhile stays kept.
func TestMarkRename(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	spawnMarked(tb, procs, 200, 240, 2_000, "npm")
	forkOnly(tb, procs, 240, 241, 2_100) // reads 240's environment
	procs.keep[240] = false              // would it be read again, it would say no
	tb.Apply(commEv(240, 240, "renamed"))
	tb.Apply(commEv(240, 240, "again"))
	if n := procs.envReads[240]; n != 1 {
		t.Errorf("environment of 240 read %d times, want once (renames change no environment)", n)
	}

	spawn(tb, procs.fakeProcs, 200, 250, 3_000, "keepme")
	forkOnly(tb, procs, 250, 251, 3_100) // forked while kept by name
	tb.Apply(commEv(250, 250, "plain"))
	kept := map[int32]bool{}
	for _, m := range tb.SessionMembers(nil) {
		kept[m.PID] = m.Kept
	}
	if kept[250] || !kept[251] {
		t.Errorf("after keepme renamed itself: Kept 250 %v (want false), 251 %v (want true)", kept[250], kept[251])
	}

	lo := agentExit(tb)
	if _, ok := lo[240]; ok {
		t.Error("the marked process was queued after renaming itself")
	}
	if _, ok := lo[250]; !ok {
		t.Errorf("the process kept by a rule it no longer matches is not a leftover: %v", lo)
	}
	if takes(tb, lo[250], ReasonLeftover)[251] {
		t.Error("its child, forked while it was kept, would be killed with it")
	}
}

// Exec decides the environment again: a marked process that execs without
// the mark is a candidate (what it forked while marked stays marked); the
// opposite way, one that execs with the mark is marked.
func TestMarkExec(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	spawnMarked(tb, procs, 200, 260, 2_000, "npm")
	forkOnly(tb, procs, 260, 261, 2_100)
	execAs(tb, procs, 260, "node", false)
	spawn(tb, procs.fakeProcs, 200, 270, 3_000, "sh")
	execAs(tb, procs, 270, "node", true)

	lo := agentExit(tb)
	if _, ok := lo[260]; !ok {
		t.Errorf("exec'd without REAPER_KEEP=1, but not a leftover: %v", lo)
	}
	if _, ok := lo[270]; ok {
		t.Error("exec'd with REAPER_KEEP=1, but queued")
	}
	if takes(tb, lo[260], ReasonLeftover)[261] {
		t.Error("the child forked while its parent was marked would be killed with it")
	}
}

// An unresolved mark is not kept: an environment that cannot be read (not
// because the process is gone) spares nothing; read again later, it can.
func TestMarkUnknownNotKept(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	spawnMarked(tb, procs, 200, 280, 2_000, "npm")
	procs.envErr[280] = syscall.EMFILE
	lo := agentExit(tb)
	if _, ok := lo[280]; !ok {
		t.Fatalf("an unreadable mark spared its process: %v", lo)
	}
	// Not memoised: once it reads, the mark counts.
	delete(procs.envErr, 280)
	tb.mu.Lock()
	s := tb.procs[280].session
	spared := tb.keep.sparedLocked(tb.procs[280], s, ReasonLeftover, nil)
	tb.mu.Unlock()
	if !spared {
		t.Error("the mark, readable now, does not spare it")
	}
}

// REAPER_KEEP=1 spares only from leftover kills and the agent's tree at
// max age: a resource or pressure kill takes marked members (and a
// session whose agent is marked is not exempt); a manual kill takes
// everything. Root's keep spares from all but a manual kill.
func TestMarkOnlyForLeftoversAndMaxAge(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	spawn(tb, procs.fakeProcs, 200, 210, 2_000, "sleep")
	spawnMarked(tb, procs, 200, 220, 2_100, "npm")
	spawn(tb, procs.fakeProcs, 220, 221, 2_200, "node")
	spawn(tb, procs.fakeProcs, 200, 230, 2_300, "keepme")
	spawn(tb, procs.fakeProcs, 230, 231, 2_400, "node")
	a := agents(tb)[200]
	cases := []struct {
		why  Reason
		want map[int32]bool
	}{
		{ReasonMaxAge, map[int32]bool{210: true}},
		{ReasonMemory, map[int32]bool{210: true, 220: true, 221: true}},
		{ReasonPressure, map[int32]bool{210: true, 220: true, 221: true}},
		{ReasonManual, map[int32]bool{210: true, 220: true, 221: true, 230: true, 231: true}},
	}
	for _, c := range cases {
		got := takes(tb, a, c.why)
		if len(got) != len(c.want) {
			t.Errorf("%s: the tree kill takes %v, want %v", c.why, got, c.want)
		}
		for pid := range c.want {
			if !got[pid] {
				t.Errorf("%s: the tree kill takes %v, want %v", c.why, got, c.want)
			}
		}
	}

	// The agent gone: a memory kill queues the marked root, not the kept one.
	tb.Apply(exitEv(200, 200, 10_000))
	id, _ := tb.SessionOf(210)
	res, err := tb.KillSession(id, ReasonMemory, Figures{Procs: 5})
	if err != nil {
		t.Fatal(err)
	}
	queued := map[int32]bool{}
	for _, pid := range res.Queued {
		queued[pid] = true
	}
	if !queued[210] || !queued[220] || queued[230] {
		t.Errorf("memory kill after the agent's exit queued %v: want 210 and the marked 220, not the kept 230", res.Queued)
	}
}

// --keep-env=false: the marker is ignored and nothing is read.
func TestMarkKeepEnvOff(t *testing.T) {
	tb, procs, _ := markTable(t, Config{NoKeepEnv: true})
	spawnMarked(tb, procs, 200, 290, 2_000, "npm")
	forkOnly(tb, procs, 290, 291, 2_100)
	if _, ok := agentExit(tb)[290]; !ok {
		t.Errorf("with --keep-env=false a REAPER_KEEP=1 process is not a leftover: %v", leftovers(tb))
	}
	if n := procs.total(); n != 0 {
		t.Errorf("%d environments read with --keep-env=false", n)
	}
	// Turned on (a reload): the marker counts again.
	tb.SetKeepEnv(true)
	tb.mu.Lock()
	spared := tb.keep.sparedLocked(tb.procs[291], tb.procs[291].session, ReasonLeftover, nil)
	tb.mu.Unlock()
	if !spared {
		t.Error("after --keep-env=true the marked process's child is not spared")
	}
}

// Bounded work at fork: one environment read per forking process, none
// for a parent outside any session, and the procs check at fork reads
// nothing; marked members count toward the procs limit.
func TestMarkForkBounded(t *testing.T) {
	tb, procs, clock := markTable(t, Config{Keep: []Rule{must(ParseRule("keepme:dev"))}})
	tb.SetProcsLimit(5)
	for i := int32(0); i < 20; i++ {
		forkOnly(tb, procs, 100, 400+i, uint64(1_500+i)) // bash, no session
	}
	spawn(tb, procs.fakeProcs, 200, 300, 2_000, "keepme")
	procs.cmdline[300] = "keepme dev"
	forkOnly(tb, procs, 300, 301, 2_050) // decides 300's rule (one command line) and environment
	before, cmd := procs.total(), procs.cmdReads
	for i := int32(0); i < 30; i++ {
		forkOnly(tb, procs, 300, 310+i, uint64(2_100+i)) // root-kept by descent
	}
	if n := procs.total() - before; n != 0 {
		t.Errorf("%d environments read for 30 forks of a parent already read", n)
	}
	if n := procs.cmdReads - cmd; n != 0 {
		t.Errorf("%d command lines read at 30 forks over the procs limit", n)
	}
	if n := procs.envReads[100]; n != 0 {
		t.Errorf("the environment of a parent in no session was read %d times", n)
	}
	if a := agents(tb)[200]; a.Reason != ReasonMaxAge {
		t.Fatalf("killed for procs by root-kept members: %+v", a)
	}
	// Marked members count: the fork that makes 6 killable ones kills.
	spawnMarked(tb, procs, 200, 350, 3_000, "npm")
	for i := int32(0); i < 4; i++ {
		forkOnly(tb, procs, 350, 360+i, uint64(3_100+i))
	}
	if a := agents(tb)[200]; a.Reason != ReasonProcs || a.Deadline != clock.now {
		t.Errorf("a session of 6 killable members (5 REAPER_KEEP=1) under a limit of 5: agent %+v, want killed for procs", a)
	}
}

// Marks persist across a restart: a member whose marked parent is gone is
// still marked in the new daemon.
func TestMarkRestore(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	markedShellChild(tb, procs, "sleep")
	exitNow(tb, procs, 220, 2_200)
	state := tb.SessionState()

	procs.stat[221] = ProcInfo{PID: 221, PPID: 1, Start: FromTicks(500), Comm: "sleep", State: 'S'}
	tb2 := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{now: offset + 50_000},
		Leftovers: true, LeftoverGrace: grace})
	tb2.Merge(must(procs.Scan()), false)
	tb2.RestoreSessions(state)
	exitNow(tb2, procs, 200, 60_000)
	if _, ok := leftovers(tb2)[221]; ok {
		t.Error("after a restart the child of a marked parent that exited is queued")
	}
}

// KeepMarked on real processes: the marker as a whole entry, anywhere in
// the first MaxEnviron bytes; an empty environment is no answer
// (ErrNoEnviron), a zombie's missing one is ErrGone.
func TestKeepMarkedProcFS(t *testing.T) {
	p, err := NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var big []string // distinct names: exec.Cmd drops repeated ones
	for i := range MaxEnviron/4000 + 2 {
		big = append(big, fmt.Sprintf("PAD%d=%s", i, strings.Repeat("x", 4000)))
	}
	cases := []struct {
		name string
		env  []string
		want bool
	}{
		{"marked", []string{"A=1", KeepMarker, "B=2"}, true},
		{"last", []string{"A=1", KeepMarker}, true},
		{"not whole", []string{"XREAPER_KEEP=1", "REAPER_KEEP=10"}, false},
		{"zero", []string{"REAPER_KEEP=0"}, false},

		{"past the bound", append(append([]string{}, big...), KeepMarker), false},
		{"within the bound", append([]string{KeepMarker}, big...), true},
	}
	for _, c := range cases {
		cmd := exec.Command("/bin/sleep", "60")
		cmd.Env = c.env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitEnviron(t, cmd.Process.Pid)
		got, err := p.KeepMarked(int32(cmd.Process.Pid))
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil || got != c.want {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
			t.Errorf("%s: KeepMarked %v, %v; want %v (%.100q)", c.name, got, err, c.want, b)
		}
	}
	self, _ := os.ReadFile("/proc/self/environ")
	if n, err := p.environSize(int32(os.Getpid())); err != nil || n != int64(len(self)) {
		t.Errorf("environSize of this process: %d, %v; want %d", n, err, len(self))
	}
	// An empty environment: no answer (execve shows one for a moment).
	cmd0 := exec.Command("/bin/sleep", "60")
	cmd0.Env = []string{}
	if err := cmd0.Start(); err != nil {
		t.Fatal(err)
	}
	if got, err := p.KeepMarked(int32(cmd0.Process.Pid)); !errors.Is(err, ErrNoEnviron) {
		t.Errorf("empty environment: KeepMarked %v, %v; want ErrNoEnviron", got, err)
	}
	cmd0.Process.Kill()
	cmd0.Wait()
	// A zombie: exited, not yet waited for.
	cmd := exec.Command("/bin/true")
	cmd.Env = []string{KeepMarker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := int32(cmd.Process.Pid)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if info, err := p.Stat(pid); err == nil && info.State == 'Z' {
			break
		}
		if time.Now().After(end) {
			t.Fatal("/bin/true never became a zombie")
		}
	}
	if got, err := p.KeepMarked(pid); !errors.Is(err, ErrGone) {
		t.Errorf("zombie: KeepMarked %v, %v; want ErrGone", got, err)
	}
}

// waitEnviron waits until pid's environment is set up (env_end, field 51
// of /proc/PID/stat, is not 0): exec.Cmd.Start returns once execve is past
// the point of no return, a moment before the kernel lays out the new
// environment.
func waitEnviron(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 48 && f[48] != "0" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("pid %d: environment never set up", pid)
		}
	}
}

// Read while the process execs (right after exec.Cmd.Start returns, which
// is before the kernel lays out the new environment), KeepMarked gives the
// right answer or ErrNoEnviron, never "not marked" from a torn read: the
// marker is the last of many entries, where a prefix would miss it.
func TestKeepMarkedDuringExec(t *testing.T) {
	p, err := NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{}
	for i := range 60 {
		env = append(env, fmt.Sprintf("FILLER%02d=%s", i, strings.Repeat("y", 40)))
	}
	env = append(env, KeepMarker)
	unsure := 0
	for range 300 {
		cmd := exec.Command("/bin/sleep", "60")
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		got, err := p.KeepMarked(int32(cmd.Process.Pid))
		cmd.Process.Kill()
		cmd.Wait()
		switch {
		case errors.Is(err, ErrNoEnviron):
			unsure++
		case err != nil || !got:
			t.Fatalf("KeepMarked during exec: %v, %v; want true or ErrNoEnviron", got, err)
		}
	}
	t.Logf("%d of 300 reads gave no answer", unsure)
}

// A rename may drop a --keep rule's keep, never gain one: an agent that
// renames itself after a --keep rule is not exempt, nor is what it forks
// then; a member that renames itself so is not kept. An exec into a
// program of that name is kept (root chose the rule).
func TestMarkRenameGainsNoKeep(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	tb.Apply(commEv(200, 200, "keepme"))
	forkOnly(tb, procs, 200, 210, 2_000) // a copy of the renamed agent
	spawn(tb, procs.fakeProcs, 200, 220, 2_100, "sleep")
	tb.Apply(commEv(220, 220, "keepme"))
	spawn(tb, procs.fakeProcs, 200, 230, 2_200, "keepme") // exec'd: kept
	kept := map[int32]bool{}
	var exempt bool
	for _, m := range tb.SessionMembers(nil) {
		kept[m.PID], exempt = m.Kept, m.Exempt
	}
	if exempt || kept[200] || kept[210] || kept[220] || !kept[230] {
		t.Errorf("exempt %v, kept %v: want only 230 (exec'd keepme) kept", exempt, kept)
	}
	a := agents(tb)[200]
	if got := takes(tb, a, ReasonMemory); !got[210] || !got[220] || got[230] {
		t.Errorf("a memory kill of the renamed agent's tree takes %v, want 210 and 220, not 230", got)
	}
	id, _ := tb.SessionOf(200)
	if _, err := tb.KillSession(id, ReasonMemory, Figures{Procs: 4}); err != nil {
		t.Errorf("KillSession of the agent renamed after a --keep rule: %v, want it queued", err)
	}

	// A reload judges the agent by what it was matched as, not its name.
	tb2, procs2, _ := markTable(t, Config{})
	tb2.Apply(commEv(200, 200, "keepme"))
	tb2.SetKeep([]Rule{must(ParseRule("keepme"))})
	forkOnly(tb2, procs2, 200, 210, 2_000)
	for _, m := range tb2.SessionMembers(nil) {
		if m.Exempt || m.Kept {
			t.Errorf("after a reload, member %d of the renamed agent's session: %+v, want neither exempt nor kept", m.PID, m)
		}
	}

	// Kept by a rule, renamed away and back: the keep is gone for good.
	tb3, procs3, _ := markTable(t, Config{})
	spawn(tb3, procs3.fakeProcs, 200, 240, 2_000, "keepme")
	tb3.Apply(commEv(240, 240, "plain"))
	tb3.Apply(commEv(240, 240, "keepme"))
	for _, m := range tb3.SessionMembers(nil) {
		if m.PID == 240 && m.Kept {
			t.Error("a process renamed away from a --keep rule's name and back is kept again")
		}
	}
}

// Reads under the table's lock do not grow with a tree's depth: a chain
// of processes with no environment to read (each exec'd by env -i) costs
// at most two environment reads per fork, and a tree kill over a deep chain whose
// marks cannot be read (a scan added it; every read fails) reads in
// proportion to its processes, not their depth times their number.
func TestMarkReadsBounded(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	const depth = 60
	parent := int32(200)
	for i := int32(0); i < depth; i++ {
		pid := 1000 + i
		before := procs.total()
		procs.envErr[pid] = ErrNoEnviron // env -i sh -c '...'
		spawn(tb, procs.fakeProcs, parent, pid, uint64(2_000+i), "sh")
		if n := procs.total() - before; n > 2 {
			t.Fatalf("fork at depth %d read %d environments, want at most 2", i, n)
		}
		parent = pid
	}
	a := agents(tb)[200]
	before := procs.total()
	if got := tb.Descendants(a.Proc(), ReasonMaxAge, nil); len(got) != depth {
		t.Errorf("the tree kill takes %d of the %d processes with no environment", len(got), depth)
	}
	if n := procs.total() - before; n > 2*depth {
		t.Errorf("a tree kill over a chain of %d read %d environments", depth, n)
	}

	// A deep chain a scan added (its marks undecided), every read failing.
	const deep = 200
	parent = 200
	for i := int32(0); i < deep; i++ {
		pid := 3000 + i
		procs.stat[pid] = ProcInfo{PID: pid, PPID: parent, Start: FromTicks(600), Comm: "sleep", State: 'S'}
		procs.envErr[pid] = syscall.EIO
		parent = pid
	}
	tb.Merge(must(procs.Scan()), true)
	before = procs.total()
	got := takes(tb, a, ReasonMaxAge)
	if n := procs.total() - before; n > 2*(depth+deep) {
		t.Errorf("a tree kill over a chain of %d with unreadable marks read %d environments, want at most %d", deep, n, 2*(depth+deep))
	}
	if !got[3000] || !got[3000+deep-1] {
		t.Error("processes whose marks cannot be read are spared by the tree kill")
	}
	if _, ok := agentExit(tb)[3000]; !ok {
		t.Error("the top of the unreadable chain is not a leftover")
	}
}

// An agent's own REAPER_KEEP=1 (exec env REAPER_KEEP=1 <agent>) spares
// nothing: not what it forks (a copy of its environment), not what those
// exec with the environment they inherited, neither from its tree kill at
// max age nor as leftovers. A marked process below an unmarked agent
// still passes its mark down.
func TestMarkAgentOwnEnv(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	execAs(tb, procs, 200, "claude", true) // the agent re-execs itself under the marker
	forkOnly(tb, procs, 200, 210, 2_000)   // a copy of the agent
	procs.keep[210] = true
	spawnMarked(tb, procs, 200, 220, 2_100, "sh") // exec'd with the inherited environment
	execAs(tb, procs, 220, "sh", true)
	forkOnly(tb, procs, 220, 221, 2_200)
	procs.keep[221] = true

	a := agents(tb)[200]
	got := takes(tb, a, ReasonMaxAge)
	for _, pid := range []int32{210, 220, 221} {
		if !got[pid] {
			t.Errorf("%d, started by an agent that carries REAPER_KEEP=1, is spared by its tree kill at max age: %v", pid, got)
		}
	}
	lo := agentExit(tb)
	for _, pid := range []int32{210, 220} {
		if _, ok := lo[pid]; !ok {
			t.Errorf("%d is not a leftover: %v", pid, lo)
		}
	}

	// Below an unmarked agent, a marked process passes its mark down.
	tb2, procs2, _ := markTable(t, Config{})
	spawn(tb2, procs2.fakeProcs, 200, 260, 2_000, "npm")
	procs2.keep[260] = true
	forkOnly(tb2, procs2, 260, 261, 2_100)
	execAs(tb2, procs2, 261, "node", false)
	a2 := agents(tb2)[200]
	if got := takes(tb2, a2, ReasonMaxAge); got[260] || got[261] {
		t.Errorf("a REAPER_KEEP=1 process below the agent, or its child, is taken by the tree kill at max age: %v", got)
	}
}

// restoreJSON persists tb's sessions as the daemon does (JSON) and
// restores them in a new table over procs, as after a restart.
func restoreJSON(t *testing.T, state []byte, procs *markProcs) *Table {
	t.Helper()
	var ms []MemberState
	if err := json.Unmarshal(state, &ms); err != nil {
		t.Fatal(err)
	}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{now: offset + 50_000},
		Leftovers: true, LeftoverGrace: grace})
	tb.Merge(must(procs.Scan()), false)
	tb.RestoreSessions(ms)
	return tb
}

// Across a restart, a member's own mark and the one it inherited are told
// apart (a clean exec drops only its own), a session whose agent carried
// the marker stays one, and a sessions.json of an earlier version, whose
// "keep" meant any keep, is read as REAPER_KEEP=1 (the weaker mark): its
// members are no leftovers, but nothing becomes root's keep by an upgrade.
func TestMarkRestoreFields(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	markedShellChild(tb, procs, "sleep")           // 221: marked by its own copy and by descent
	spawnMarked(tb, procs, 200, 230, 2_200, "npm") // its own mark only
	tb.mu.Lock()
	tb.keep.sparedLocked(tb.procs[230], tb.procs[230].session, ReasonLeftover, nil)
	tb.mu.Unlock()
	state, err := json.Marshal(tb.SessionState())
	if err != nil {
		t.Fatal(err)
	}
	tb2 := restoreJSON(t, state, procs)
	// 230 and 221 exec clean: 230 loses its mark, 221 keeps its inherited one.
	execAs(tb2, procs, 230, "node", false)
	execAs(tb2, procs, 221, "node", false)
	exitNow(tb2, procs, 200, 60_000)
	lo := leftovers(tb2)
	if _, ok := lo[230]; !ok {
		t.Errorf("a member whose own mark was restored, exec'd clean, is not a leftover: %v", lo)
	}
	if _, ok := lo[221]; ok {
		t.Error("a member marked by descent, restored, was queued after a clean exec")
	}

	// A session whose agent carried the marker.
	tb3, procs3, _ := markTable(t, Config{})
	execAs(tb3, procs3, 200, "claude", true)
	spawn(tb3, procs3.fakeProcs, 200, 240, 2_000, "sleep")
	procs3.keep[240] = true
	tb3.mu.Lock()
	tb3.keep.sparedLocked(tb3.procs[240], tb3.procs[240].session, ReasonLeftover, nil)
	tb3.mu.Unlock()
	state, _ = json.Marshal(tb3.SessionState())
	exitNow(tb3, procs3, 200, 3_000)
	tb4 := restoreJSON(t, state, procs3)
	if _, ok := leftovers(tb4)[240]; !ok {
		t.Errorf("after a restart, the child of an agent that carried REAPER_KEEP=1 is not a leftover: %v", leftovers(tb4))
	}

	// An earlier version's file: "keep" on a member whose agent is gone:
	// spared as a leftover, not exempt from the limits.
	procs5 := &markProcs{fakeProcs: newFakeProcs(), envReads: map[int32]int{}, envErr: map[int32]error{}}
	procs5.stat[250] = ProcInfo{PID: 250, PPID: 1, Start: FromTicks(500), Comm: "node", State: 'S'}
	legacy := fmt.Sprintf(`[{"pid":250,"start":%s,"session":{"pid":200,"start":%s},"session_comm":"claude","session_rule":"claude","agent_exited_at":%d,"keep":true}]`,
		must(json.Marshal(FromTicks(500))), must(json.Marshal(FromTicks(400))), offset+40_000)
	tb5 := restoreJSON(t, []byte(legacy), procs5)
	if len(leftovers(tb5)) != 0 {
		t.Errorf("a member an earlier daemon kept was queued as a leftover: %v", leftovers(tb5))
	}
	id, ok := tb5.SessionOf(250)
	if !ok {
		t.Fatal("the legacy member was not restored")
	}
	// The legacy mark is read as the weaker one (REAPER_KEEP=1, which it
	// often was): the limits count and kill it, so that a session's own
	// marker never becomes root's keep through an upgrade.
	if _, err := tb5.KillSession(id, ReasonMemory, Figures{Procs: 1}); err != nil {
		t.Errorf("a memory kill of a legacy-kept member refused: %v (a legacy keep must not be root's keep)", err)
	}
}

// An unkeep withdraws root's keep only: a REAPER_KEEP=1 a process below
// inherited (from a marked ancestor that has exited) stays.
func TestMarkUnkeepLeavesInherited(t *testing.T) {
	tb, procs, _ := markTable(t, Config{})
	markedShellChild(tb, procs, "node")
	forkOnly(tb, procs, 221, 222, 2_200)
	execAs(tb, procs, 222, "node", false)
	exitNow(tb, procs, 220, 2_300)
	exitNow(tb, procs, 200, 3_000)
	if _, err := tb.Unkeep(221, Start{}); err != nil {
		t.Fatal(err)
	}
	a, ok := leftovers(tb)[221]
	if !ok {
		t.Fatalf("the unkept process is not a leftover: %v", leftovers(tb))
	}
	if got := takes(tb, a, ReasonLeftover); got[222] {
		t.Error("the unkeep of 221 took the REAPER_KEEP=1 222 inherited from 220 (exited)")
	}
}

// A rename judges a --keep rule's :TEXT against the command line of now
// (process.title rewrites both), not the one read before it.
func TestMarkRenameReadsCmdline(t *testing.T) {
	tb, procs, _ := markTable(t, Config{Keep: []Rule{must(ParseRule("node:next dev")), must(ParseRule("next-sv:next dev"))}})
	procs.cmdline[240] = "node next dev"
	spawn(tb, procs.fakeProcs, 200, 240, 2_000, "node")
	forkOnly(tb, procs, 240, 241, 2_100) // reads 240's command line: kept
	procs.cmdline[240] = "next-sv worker"
	tb.Apply(commEv(240, 240, "next-sv"))
	for _, m := range tb.SessionMembers(nil) {
		if m.PID == 240 && m.Kept {
			t.Error("renamed, with a command line no keep rule matches, but kept by the one read before")
		}
	}
}

// A reload of --keep or --keep-env brings the queue in line: an agent a
// removed rule kept gets its max-age deadline, one a new rule keeps loses
// it; a leftover a new rule keeps leaves the queue, one a removed rule
// kept joins it; with --keep-env turned off, a REAPER_KEEP=1 leftover is
// queued, turned on again, it leaves the queue.
func TestMarkReloadReconciles(t *testing.T) {
	tb, procs, _ := markTable(t, Config{Keep: []Rule{must(ParseRule("claude:--kept"))}})
	tb.Apply(fork(100, 300, 1_500))
	procs.stat[300] = ProcInfo{PID: 300, PPID: 100, Start: FromTicks(600), Comm: "claude", State: 'S'}
	procs.cmdline[300] = "claude --kept"
	tb.Apply(execEv(300))
	if _, ok := agents(tb)[300]; ok {
		t.Fatal("an agent a --keep rule matches was queued")
	}
	tb.SetKeep([]Rule{must(ParseRule("claude"))})
	if a, ok := agents(tb)[200]; ok {
		t.Errorf("an agent a new --keep rule matches is still queued: %+v", a)
	}
	tb.SetKeep(nil)
	ag := agents(tb)
	if a, ok := ag[300]; !ok || a.Reason != ReasonMaxAge {
		t.Errorf("the agent whose --keep rule was removed: %+v, want queued for its max age", a)
	}
	if _, ok := ag[200]; !ok {
		t.Error("the agent whose --keep rule was removed again is not queued")
	}

	spawn(tb, procs.fakeProcs, 200, 210, 2_000, "sleep")
	spawn(tb, procs.fakeProcs, 200, 220, 2_100, "keepme")
	spawnMarked(tb, procs, 200, 230, 2_200, "npm")
	tb.SetKeep([]Rule{must(ParseRule("keepme"))})
	exitNow(tb, procs, 200, 10_000)
	if lo := leftovers(tb); len(lo) != 1 {
		t.Fatalf("leftovers %v, want 210 only", lo)
	}
	tb.SetKeep([]Rule{must(ParseRule("sleep"))})
	lo := leftovers(tb)
	if _, ok := lo[210]; ok {
		t.Error("a leftover a new --keep rule matches is still queued")
	}
	if _, ok := lo[220]; !ok {
		t.Errorf("a leftover whose --keep rule was removed is not queued: %v", lo)
	}
	tb.SetKeepEnv(false)
	if _, ok := leftovers(tb)[230]; !ok {
		t.Errorf("with --keep-env turned off, the REAPER_KEEP=1 leftover is not queued: %v", leftovers(tb))
	}
	tb.SetKeepEnv(true)
	if _, ok := leftovers(tb)[230]; ok {
		t.Error("with --keep-env turned on again, the REAPER_KEEP=1 leftover is still queued")
	}
}

// An earlier version's file that says "keep" for a live agent (it ran
// under REAPER_KEEP=1, which exempted it then) gives it no keep now: it is
// queued for its max age and its session is not exempt from the limits.
func TestMarkRestoreLegacyAgentKeep(t *testing.T) {
	procs := &markProcs{fakeProcs: newFakeProcs(), envReads: map[int32]int{}, envErr: map[int32]error{}}
	procs.stat[200] = ProcInfo{PID: 200, PPID: 1, Start: FromTicks(400), Comm: "claude", State: 'S'}
	procs.stat[250] = ProcInfo{PID: 250, PPID: 200, Start: FromTicks(500), Comm: "node", State: 'S'}
	start := must(json.Marshal(FromTicks(400)))
	legacy := fmt.Sprintf(`[{"pid":200,"start":%s,"session":{"pid":200,"start":%s},"session_comm":"claude","session_rule":"claude","keep":true},`+
		`{"pid":250,"start":%s,"session":{"pid":200,"start":%s},"session_comm":"claude","session_rule":"claude","keep":true}]`,
		start, start, must(json.Marshal(FromTicks(500))), start)
	tb := restoreJSON(t, []byte(legacy), procs)
	if !tb.Queue().Queued(tb.procs[200].agent) {
		t.Fatal("a live agent an earlier daemon kept (REAPER_KEEP=1) is not queued for its max age after the upgrade")
	}
	id, ok := tb.SessionOf(200)
	if !ok {
		t.Fatal("the agent's session was not restored")
	}
	if _, err := tb.KillSession(id, ReasonMemory, Figures{Procs: 2}); err != nil {
		t.Errorf("the session of a legacy-kept agent is exempt from the limits: %v", err)
	}
}
