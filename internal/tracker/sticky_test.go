package tracker

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Agent status is sticky: an agent's own exec of another program keeps its
// deadline, its rule and its session.
func TestStickyExec(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	before := agents(tb)[200]
	same := func(what string) {
		t.Helper()
		a, ok := agents(tb)[200]
		if !ok || a.Seq != before.Seq || a.Deadline != before.Deadline || a.Rule != "claude" || a.Comm != "claude" {
			t.Fatalf("%s: %+v %v, want the agent as it was queued: %+v", what, a, ok, before)
		}
		if sid, ok := tb.SessionOf(200); !ok || sid != before.Session {
			t.Fatalf("%s: session %+v %v, want %+v", what, sid, ok, before.Session)
		}
	}
	// exec sleep: matches no rule.
	procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(500), Comm: "sleep", State: 'S'}
	procs.cmdline[200] = "sleep 3600"
	tb.Apply(execEv(200))
	same("exec of a program no rule matches")
	// exec of a program another rule matches: the rule it matched stays.
	procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(500), Comm: "npm", State: 'S'}
	procs.cmdline[200] = "npm run agent"
	tb.Apply(execEv(200))
	same("exec of a program another rule matches")
	if p, _ := tb.Lookup(200); p.Comm != "npm" {
		t.Errorf("table comm %q, want the current npm", p.Comm)
	}
	// Its session stands: its exit leaves its child a leftover.
	if _, ok := agentExit(tb)[210]; !ok {
		t.Errorf("the child of an agent that exec'd is not a leftover: %v", leftovers(tb))
	}
}

// A fork of an agent carries its name and is queued by it, but only until
// its first exec or rename says what it is (a claude's git): then it
// leaves the queue unless that matches too, and stays a member. From a
// matching exec on, it is sticky like any agent.
func TestForkCopyNotSticky(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	for _, pid := range []int32{210, 220, 230} { // /proc shows the copies
		procs.stat[pid] = ProcInfo{PID: pid, PPID: 200, Start: FromTicks(500), Comm: "claude", State: 'S'}
	}
	tb.Apply(fork(200, 210, 2_000))
	if _, ok := agents(tb)[210]; !ok {
		t.Fatal("a fork of claude is not queued")
	}
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(500), Comm: "git", State: 'S'}
	tb.Apply(execEv(210))
	if _, ok := agents(tb)[210]; ok {
		t.Error("a fork of claude that exec'd git is still queued")
	}
	tb.Apply(fork(200, 220, 3_000))
	if _, ok := agents(tb)[220]; !ok {
		t.Fatal("a fork of claude is not queued")
	}
	tb.Apply(commEv(220, 220, "worker"))
	if _, ok := agents(tb)[220]; ok {
		t.Error("a fork of claude that renamed itself worker is still queued")
	}
	tb.Apply(fork(200, 230, 4_000))
	tb.Apply(execEv(230))
	before, ok := agents(tb)[230]
	if !ok {
		t.Fatal("a fork of claude that exec'd claude is not queued")
	}
	procs.stat[230] = ProcInfo{PID: 230, PPID: 200, Start: FromTicks(500), Comm: "sleep", State: 'S'}
	tb.Apply(execEv(230))
	if a, ok := agents(tb)[230]; !ok || a.Seq != before.Seq {
		t.Error("an agent by its own exec lost its deadline at its next exec")
	}
	for _, pid := range []int32{210, 220, 230} {
		if sid, ok := tb.SessionOf(pid); !ok || sid.PID != 200 {
			t.Errorf("%d: session %+v %v, want 200's", pid, sid, ok)
		}
	}
}

// A nested agent keeps its own deadline through a rename, and once its
// outer agent exits it stays the leftover it became.
func TestStickyNestedAgent(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 260, 3_000, "claude")
	before := agents(tb)[260]
	tb.Apply(commEv(260, 260, "node"))
	if a, ok := agents(tb)[260]; !ok || a.Seq != before.Seq || a.Reason != ReasonMaxAge || a.Session.PID != 200 {
		t.Fatalf("renamed nested agent: %+v %v, want %+v", a, ok, before)
	}
	lo, ok := agentExit(tb)[260]
	if !ok {
		t.Fatal("the nested agent is not a leftover after its outer agent exited")
	}
	tb.Apply(commEv(260, 260, "claude"))
	tb.Apply(commEv(260, 260, "sh"))
	if a, ok := agents(tb)[260]; !ok || a.Seq != lo.Seq || a.Reason != ReasonLeftover || a.Deadline != lo.Deadline {
		t.Errorf("renamed leftover: %+v %v, want %+v", a, ok, lo)
	}
}

// A kept agent that renamed itself is queued by the rule it matched when
// root withdraws the keep.
func TestStickyKeptAgentUnkept(t *testing.T) {
	tb, _, _ := sessionTable(t)
	if _, err := tb.Keep(200, Start{}); err != nil {
		t.Fatal(err)
	}
	tb.Apply(commEv(200, 200, "node"))
	if n := len(agents(tb)); n != 0 {
		t.Fatalf("%d queued, want 0 (kept)", n)
	}
	if _, err := tb.Unkeep(200, Start{}); err != nil {
		t.Fatal(err)
	}
	if a, ok := agents(tb)[200]; !ok || a.Rule != "claude" || a.Comm != "claude" || a.Reason != ReasonMaxAge {
		t.Errorf("unkept renamed agent: %+v %v, want queued as the claude it was matched as", a, ok)
	}
}

// A reload judges every agent again on what it was matched as: one that
// keeps its rule stays, whatever its name now; one whose rule is gone, or
// that is out of the new scope, leaves the queue and its session is
// dissolved: its members are no leftovers when it exits.
func TestReloadDissolvesSession(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	tb.Apply(commEv(200, 200, "node"))
	before := agents(tb)[200]
	tb.SetRules(append(append([]Rule{}, DefaultRules...), must(ParseRule("codex"))), nil)
	if a, ok := agents(tb)[200]; !ok || a.Seq != before.Seq {
		t.Fatalf("a reload that kept its rule let the renamed agent go: %+v %v", a, ok)
	}
	// Its rule replaced by one that matches what it was matched as: it
	// stays, under the new rule, with the same deadline.
	tb.SetRules([]Rule{must(ParseRule("claude*"))}, nil)
	if a, ok := agents(tb)[200]; !ok || a.Rule != "claude*" || a.Deadline != before.Deadline || a.Comm != "claude" {
		t.Fatalf("rule replaced: %+v %v, want the agent under claude* with deadline %d", a, ok, before.Deadline)
	}
	if ss := tb.Sessions(); len(ss) != 1 || ss[0].Rule != "claude*" || ss[0].Members != 2 {
		t.Fatalf("rule replaced: sessions %+v, want one of 2 under claude*", ss)
	}
	// Its rule dropped.
	tb.SetRules([]Rule{must(ParseRule("npm*:agent"))}, nil)
	if n := len(agents(tb)); n != 0 {
		t.Fatalf("%d queued after its rule was dropped, want 0", n)
	}
	if st := tb.Stats(); st.Sessions != 0 || st.SessionMembers != 0 {
		t.Fatalf("after its rule was dropped: %+v, want no session", st)
	}
	if _, ok := tb.SessionOf(210); ok {
		t.Fatal("its child is still a member")
	}
	if lo := agentExit(tb); len(lo) != 0 {
		t.Errorf("leftovers of a dissolved session: %v", lo)
	}
}

// A reload that narrows the scope dissolves the sessions outside it.
func TestReloadScopeDissolvesSession(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	tb.SetRules(DefaultRules, []Ancestor{{PID: 100}})
	if _, ok := agents(tb)[200]; !ok {
		t.Fatal("the agent under bash 100 left the queue")
	}
	tb.SetRules(DefaultRules, []Ancestor{{PID: 4242}})
	if n, st := len(agents(tb)), tb.Stats(); n != 0 || st.Sessions != 0 {
		t.Fatalf("out of the new scope: %d queued, %+v", n, st)
	}
}

// A session whose agent exited is dissolved by a reload that drops its
// rule: its leftovers' kills are taken back.
func TestReloadDissolvesExitedSession(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	if _, ok := agentExit(tb)[210]; !ok {
		t.Fatal("no leftover queued")
	}
	tb.SetRules(DefaultRules, nil) // unchanged: stays
	if _, ok := leftovers(tb)[210]; !ok {
		t.Fatal("a reload with the same rules took the leftover back")
	}
	tb.SetRules([]Rule{must(ParseRule("npm*:agent"))}, nil)
	if lo := leftovers(tb); len(lo) != 0 {
		t.Errorf("leftovers after the rule was dropped: %v", lo)
	}
	if _, ok := tb.SessionOf(210); ok {
		t.Error("still a member")
	}
}

// A nested agent whose outer session is dissolved heads a session of its
// own, with what it forked, keeping its deadline; one that had become a
// leftover of the outer session gets its max age back.
func TestReloadNestedAgentHeadsItsSession(t *testing.T) {
	for _, outerExits := range []bool{false, true} {
		t.Run(fmt.Sprint("outer exits ", outerExits), func(t *testing.T) {
			tb, procs, _ := sessionTable(t)
			procs.cmdline[260] = "npm run agent:x"
			spawn(tb, procs, 200, 210, 2_000, "sleep")
			spawn(tb, procs, 200, 260, 3_000, "npm")
			spawn(tb, procs, 260, 270, 4_000, "sleep")
			before, ok := agents(tb)[260]
			if !ok || before.Session.PID != 200 {
				t.Fatalf("nested agent %+v %v", before, ok)
			}
			if outerExits {
				tb.Apply(exitEv(200, 200, 10_000))
				if a := agents(tb)[260]; a.Reason != ReasonLeftover {
					t.Fatalf("nested agent after the outer exit: %+v", a)
				}
			}
			tb.SetRules([]Rule{must(ParseRule("npm*:agent"))}, nil)
			a, ok := agents(tb)[260]
			if !ok || a.Reason != ReasonMaxAge || a.Deadline != before.Deadline || a.Session.PID != 260 || a.Rule != "npm*:agent" {
				t.Fatalf("nested agent after the reload: %+v %v, want its max age %d in its own session", a, ok, before.Deadline)
			}
			if sid, ok := tb.SessionOf(270); !ok || sid.PID != 260 {
				t.Errorf("its child: session %+v %v, want 260's", sid, ok)
			}
			if _, ok := tb.SessionOf(210); ok {
				t.Error("the outer agent's child is still a member")
			}
			if n := len(agents(tb)); n != 1 {
				t.Errorf("%d queued, want only the nested agent: %v", n, agents(tb))
			}
		})
	}
}

// A restart under rules that no longer match a persisted session's agent
// dissolves it, whether the agent lives or exited while no daemon ran.
func TestRestoreDissolves(t *testing.T) {
	for _, agentExits := range []bool{false, true} {
		t.Run(fmt.Sprint("agent exits ", agentExits), func(t *testing.T) {
			tb, procs, _ := sessionTable(t)
			spawn(tb, procs, 200, 210, 2_000, "sleep")
			if agentExits {
				agentGone(tb, procs)
			}
			state := tb.SessionState()
			procs.stat[210] = ProcInfo{PID: 210, PPID: 1, Start: FromTicks(500), Comm: "sleep", State: 'S'} // reparented
			core, logs := observer.New(zap.InfoLevel)
			tb2 := NewTable(Config{Rules: []Rule{must(ParseRule("npm*:agent"))}, MaxAge: age, Proc: procs,
				Clock: &fakeClock{now: offset + 50_000}, Leftovers: true, LeftoverGrace: grace, Log: zap.New(core)})
			tb2.Merge(must(procs.Scan()), false)
			if n := tb2.RestoreSessions(state); n != 0 {
				t.Fatalf("restored %d members, want 0", n)
			}
			if st := tb2.Stats(); st.Sessions != 0 || st.Agents != 0 || st.Leftovers != 0 {
				t.Fatalf("after restore: %+v", st)
			}
			if n := logs.FilterMessageSnippet("session dissolved").FilterField(zap.String("cause", "restart")).Len(); n != 1 {
				t.Errorf("%d dissolved lines, want 1", n)
			}
			if !agentExits {
				tb2.Apply(exitEv(200, 200, 60_000))
			}
			if lo := leftovers(tb2); len(lo) != 0 {
				t.Errorf("leftovers of a dissolved session: %v", lo)
			}
		})
	}
}

// An agent that renamed itself before a restart is not matched by the new
// daemon's scan, but its persisted session stands (its rule is in force):
// it is queued by that rule, its members restored.
func TestRestoreRenamedAgent(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	tb.Apply(commEv(200, 200, "node"))
	state := tb.SessionState()
	procs.stat[200] = ProcInfo{PID: 200, PPID: 100, Start: FromTicks(500), Comm: "node", State: 'S'}
	tb2 := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: &fakeClock{now: offset + 50_000},
		Leftovers: true, LeftoverGrace: grace})
	tb2.Merge(must(procs.Scan()), false)
	if n := len(agents(tb2)); n != 0 {
		t.Fatalf("the scan matched node: %v", agents(tb2))
	}
	tb2.RestoreSessions(state)
	a, ok := agents(tb2)[200]
	if !ok || a.Rule != "claude" || a.Comm != "claude" || a.Deadline != FromTicks(500).Latest()+int64(age) {
		t.Fatalf("restored renamed agent: %+v %v", a, ok)
	}
	if st := tb2.Stats(); st.Sessions != 1 || st.SessionMembers != 2 {
		t.Errorf("after restore: %+v, want one session of 2", st)
	}
}

// A resync scan that adds a process before its fork event arrives gives it
// no membership if its session's agent has exited (a scan cannot know its
// lineage); the fork event that follows does, as a fork does.
func TestLateForkAfterResyncJoinsSession(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	agentGone(tb, procs)
	const scanStart = int64(6 * time.Second) // boottime; tick 600
	procs.stat[220] = ProcInfo{PID: 220, PPID: 210, Start: FromTicks(600), Comm: "sleep", State: 'S'}
	tb.MergeAt(must(procs.Scan()), true, scanStart)
	if _, ok := tb.SessionOf(220); ok {
		t.Fatal("the scan alone made 220 a member after its agent exited")
	}
	tb.Apply(fork(210, 220, uint64(scanStart+int64(2*time.Millisecond)-offset)))
	if sid, ok := tb.SessionOf(220); !ok || sid.PID != 200 {
		t.Fatalf("after its fork event: session %+v %v, want 200's", sid, ok)
	}
	if p, _ := tb.Lookup(220); !p.Start.Exact {
		t.Errorf("the fork event's exact start not learnt: %+v", p.Start)
	}
	// It dies with its parent's leftover tree, not as a root of its own.
	if _, ok := leftovers(tb)[220]; ok {
		t.Error("220 queued as a leftover root under a live member")
	}
	if desc := tb.Descendants(tb.procs[210], ReasonLeftover, nil); len(desc) != 1 || desc[0].PID != 220 {
		t.Errorf("descendants of 210: %+v", desc)
	}
}

// A resync scan that shows a process under a new name reads its keep mark
// again: an exec among the lost events may have brought REAPER_KEEP=1.
func TestResyncRenameReadsKeep(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	tb.mu.Lock()
	kept := tb.keep.sparedLocked(tb.procs[210], tb.procs[210].session, ReasonLeftover, nil)
	tb.mu.Unlock()
	if kept {
		t.Fatal("210 kept")
	}
	procs.stat[210] = ProcInfo{PID: 210, PPID: 200, Start: FromTicks(500), Comm: "npm", State: 'S'}
	procs.keep[210] = true
	tb.MergeAt(must(procs.Scan()), true, int64(6*time.Second))
	tb.Apply(exitEv(200, 200, uint64(7*time.Second)-uint64(offset)))
	if lo := leftovers(tb); len(lo) != 0 {
		t.Errorf("210, exec'd under REAPER_KEEP=1 during an overrun, queued: %v", lo)
	}
}

// flakyProcs fails reads with EMFILE as many times as told, per PID.
type flakyProcs struct {
	*fakeProcs
	statFails, cmdFails, cgFails map[int32]int
}

var errEMFILE = fmt.Errorf("open /proc/N: %w", syscall.EMFILE)

func newFlakyProcs() *flakyProcs {
	return &flakyProcs{fakeProcs: newFakeProcs(), statFails: map[int32]int{}, cmdFails: map[int32]int{}, cgFails: map[int32]int{}}
}

func fail(m map[int32]int, pid int32) bool {
	if m[pid] > 0 {
		m[pid]--
		return true
	}
	return false
}

func (f *flakyProcs) Stat(pid int32) (ProcInfo, error) {
	if fail(f.statFails, pid) {
		return ProcInfo{}, errEMFILE
	}
	return f.fakeProcs.Stat(pid)
}

func (f *flakyProcs) Cmdline(pid int32) (string, error) {
	if fail(f.cmdFails, pid) {
		return "", errEMFILE
	}
	return f.fakeProcs.Cmdline(pid)
}

func (f *flakyProcs) Cgroup(pid int32) (cgroupinfo.Info, error) {
	if fail(f.cgFails, pid) {
		return cgroupinfo.Info{}, errEMFILE
	}
	return f.fakeProcs.Cgroup(pid)
}

type noTimer struct{}

func (noTimer) Stop() bool { return true }

// A /proc read at exec that fails for another reason than an exit
// (EMFILE) is retried with backoff until it succeeds, counted and warned
// of (rate-limited): the agent is matched. A read of a process that is gone
// is not retried.
func TestProcReadRetried(t *testing.T) {
	procs := newFlakyProcs()
	clock := &fakeClock{now: offset + 1_000}
	core, logs := observer.New(zap.WarnLevel)
	var pins int
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock, Log: zap.New(core),
		Pin: func(pid int32, s Start) (int, error) {
			if pins++; pid == 400 && pins == 1 {
				return -1, errEMFILE
			}
			return -1, nil
		}})
	var timers []time.Duration
	tb.retries.afterFunc = func(d time.Duration, f func()) interface{ Stop() bool } {
		timers = append(timers, d)
		return noTimer{}
	}
	retry := func(after time.Duration) {
		t.Helper()
		clock.now += int64(after)
		tb.retries.run()
	}
	warnings := func() int { return logs.FilterMessageSnippet("reading /proc failed").Len() }
	// retried applies pid's exec, a failure armed: nothing is queued, one
	// retry is; the retry queues the agent.
	retried := func(pid int32, what string) Agent {
		t.Helper()
		tb.Apply(execEv(pid))
		if _, ok := agents(tb)[pid]; ok || tb.RetriesPending() != 1 {
			t.Fatalf("%s: queued %v, pending %d", what, ok, tb.RetriesPending())
		}
		retry(retryFirst)
		a, ok := agents(tb)[pid]
		if !ok {
			t.Fatalf("%s, retried: not queued", what)
		}
		return a
	}
	procs.stat[100] = shell
	tb.Merge(must(procs.Scan()), false)

	// The command line read at exec fails twice.
	forkClaude(tb, procs.stat, 200, 1_000)
	procs.cmdFails[200] = 2
	tb.Apply(execEv(200))
	if n := len(agents(tb)); n != 0 {
		t.Fatalf("matched though the read failed: %d", n)
	}
	if st := tb.Stats(); st.ProcErrs != 1 || tb.RetriesPending() != 1 || len(timers) != 1 || timers[0] != retryFirst {
		t.Fatalf("after the failed read: errs %d, pending %d, timers %v", st.ProcErrs, tb.RetriesPending(), timers)
	}
	if warnings() != 1 {
		t.Fatalf("%d warnings, want 1", warnings())
	}
	tb.retries.run() // not due yet
	if procs.cmdFails[200] != 1 {
		t.Fatal("a retry ran before it was due")
	}
	retry(retryFirst) // fails again: backoff doubles
	if st := tb.Stats(); st.ProcErrs != 2 || tb.RetriesPending() != 1 || timers[len(timers)-1] != 2*retryFirst {
		t.Fatalf("after the second failure: errs %d, pending %d, timers %v", st.ProcErrs, tb.RetriesPending(), timers)
	}
	if warnings() != 1 {
		t.Fatalf("%d warnings within 10 s, want 1", warnings())
	}
	retry(2 * retryFirst)
	a, ok := agents(tb)[200]
	if !ok || a.Deadline != 1_000+offset+int64(age) || tb.RetriesPending() != 0 {
		t.Fatalf("after the read succeeded: %+v %v (pending %d), want the agent at its exact start + max age", a, ok, tb.RetriesPending())
	}

	// The stat read at exec fails: the exec is applied at the retry.
	forkClaude(tb, procs.stat, 300, 2_000)
	procs.statFails[300] = 1
	if a := retried(300, "exec whose stat failed"); a.Deadline != 2_000+offset+int64(age) {
		t.Fatalf("exec retried: %+v", a)
	}

	// The pidfd can't be opened (EMFILE): retried.
	forkClaude(tb, procs.stat, 400, 3_000)
	pins = 0
	retried(400, "pin failed")

	// The cgroup read fails under a cgroup scope: retried, not judged out
	// of scope.
	tb.SetRules(DefaultRules, []Ancestor{must(ParseAncestor("cgroup:/agents/*"))})
	procs.cgroup[500] = "0::/agents/a\n"
	forkClaude(tb, procs.stat, 500, 4_000)
	procs.cgFails[500] = 1
	retried(500, "cgroup read failed")

	// A process that exited: nothing to retry, nothing counted.
	errs := tb.Stats().ProcErrs
	tb.Apply(execEv(999))
	if tb.RetriesPending() != 0 || tb.Stats().ProcErrs != errs {
		t.Errorf("a gone process: pending %d, errs %d (was %d)", tb.RetriesPending(), tb.Stats().ProcErrs, errs)
	}
	// A retry of a process that exited meanwhile is dropped.
	forkClaude(tb, procs.stat, 600, 5_000)
	procs.cmdFails[600] = 1
	tb.Apply(execEv(600))
	tb.Apply(exitEv(600, 600, 6_000))
	delete(procs.stat, 600)
	retry(retryFirst)
	if tb.RetriesPending() != 0 {
		t.Errorf("retry of an exited process still pending")
	}
	// Past the rate limit: another warning, with the count since the last.
	clock.now += readWarnEvery
	tb.mu.Lock()
	tb.procErr(200, errEMFILE)
	tb.mu.Unlock()
	w := logs.FilterMessageSnippet("reading /proc failed").All()
	if len(w) != 2 || w[1].ContextMap()["failures_since_last_warning"] != int64(6) {
		t.Errorf("warnings %d (last %v), want 2, the second counting 6 failures (a pin failure among them)", len(w), w[len(w)-1].ContextMap())
	}
}

// Fork events queued across a netlink overflow arrive after the resync
// scan, stamped before it began. The scan shows their effect but not their
// lineage: a process it added after its session's agent exited gets its
// membership from its (stale) fork event, and so do the processes the scan
// linked below it, whose own fork events may be among those lost. A stale
// fork event of a PID the table holds under another start gives nothing.
func TestStaleForkAfterResyncJoinsSession(t *testing.T) {
	tb, procs, _ := sessionTable(t)
	spawn(tb, procs, 200, 210, 2_000, "sleep")
	agentGone(tb, procs)
	// Forked at 5.5 s (boottime) during the overflow; scan at 6 s.
	const forkAt = int64(5500 * time.Millisecond)
	procs.stat[220] = ProcInfo{PID: 220, PPID: 210, Start: FromTicks(550), Comm: "sleep", State: 'S'}
	procs.stat[230] = ProcInfo{PID: 230, PPID: 220, Start: FromTicks(551), Comm: "sleep", State: 'S'}
	procs.stat[240] = ProcInfo{PID: 240, PPID: 210, Start: FromTicks(560), Comm: "sleep", State: 'S'}
	tb.MergeAt(must(procs.Scan()), true, int64(6*time.Second))
	for _, pid := range []int32{220, 230, 240} {
		if _, ok := tb.SessionOf(pid); ok {
			t.Fatalf("the scan alone made %d a member after its agent exited", pid)
		}
	}
	stale := tb.Stats().Stale
	tb.Apply(fork(210, 220, uint64(forkAt+1_000-offset)))
	for _, pid := range []int32{220, 230} {
		if sid, ok := tb.SessionOf(pid); !ok || sid.PID != 200 {
			t.Errorf("%d after 220's stale fork event: session %+v %v, want 200's", pid, sid, ok)
		}
	}
	if p, _ := tb.Lookup(220); !p.Start.Exact {
		t.Errorf("the fork event's exact start not learnt: %+v", p.Start)
	}
	if got := tb.Stats().Stale; got != stale {
		t.Errorf("the event used was counted stale (%d, was %d)", got, stale)
	}
	// 240's event names another start: an earlier holder of the PID.
	tb.Apply(fork(210, 240, uint64(forkAt+int64(20*time.Millisecond)-offset)))
	if sid, ok := tb.SessionOf(240); ok {
		t.Errorf("240: a member of %+v by the fork event of an earlier holder of its PID", sid)
	}
	if got := tb.Stats().Stale; got != stale+1 {
		t.Errorf("stale count %d, want %d (240's event)", got, stale+1)
	}
	// They die with 210's leftover tree.
	if desc := targets(tb.Descendants(tb.procs[210], ReasonLeftover, nil)); !desc[220] || !desc[230] {
		t.Errorf("descendants of 210: %v", desc)
	}
}

// stopTimer counts its Stop calls.
type stopTimer struct{ stops *int }

func (s stopTimer) Stop() bool { *s.stops++; return true }

// Close stops the /proc retry timer, arms none again and runs no retry
// that fires meanwhile; a second Close does nothing.
func TestCloseStopsProcRetryTimer(t *testing.T) {
	procs := newFlakyProcs()
	clock := &fakeClock{now: offset + 1_000}
	tb := NewTable(Config{Rules: DefaultRules, MaxAge: age, Proc: procs, Clock: clock})
	armed, stops := 0, 0
	tb.retries.afterFunc = func(d time.Duration, f func()) interface{ Stop() bool } {
		armed++
		return stopTimer{&stops}
	}
	procs.stat[100] = shell
	tb.Merge(must(procs.Scan()), false)
	forkClaude(tb, procs.stat, 200, 1_000)
	procs.cmdFails[200] = 1
	tb.Apply(execEv(200))
	if armed != 1 || tb.RetriesPending() != 1 {
		t.Fatalf("after a failed read: %d timers armed, %d pending; want 1, 1", armed, tb.RetriesPending())
	}
	tb.Close()
	if stops != 1 {
		t.Fatalf("Close stopped the timer %d times, want 1", stops)
	}
	tb.Close()
	if stops != 1 {
		t.Errorf("a second Close stopped it again (%d)", stops)
	}
	clock.now += int64(time.Minute)
	tb.retries.run() // the timer fired as it was being stopped
	if _, ok := agents(tb)[200]; ok {
		t.Error("a retry ran after Close")
	}
	forkClaude(tb, procs.stat, 300, 2_000)
	procs.cmdFails[300] = 1
	tb.Apply(execEv(300))
	if armed != 1 {
		t.Errorf("a timer was armed after Close (%d in all)", armed)
	}
}
