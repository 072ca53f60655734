package api

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/resource"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

func TestParseMemberQuery(t *testing.T) {
	for in, want := range map[string]MemberQuery{"": {}, "all": {All: true}, "12": {PIDs: []int32{12}}, "12,7": {PIDs: []int32{12, 7}}} {
		got, err := ParseMemberQuery(in)
		if err != nil || got.All != want.All || !slices.Equal(got.PIDs, want.PIDs) {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	many := "1"
	for i := range MaxMemberSessions {
		many += "," + string(rune('1'+i%9))
	}
	for _, in := range []string{"x", "12,", "-3", "0", "ALL", many} {
		if _, err := ParseMemberQuery(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// memberSource is one session (agent 10, children 11 and 12, 12 kept) as
// the table and the sampler would give it.
type memberSource struct{}

var sid = tracker.SessionID{PID: 10, Start: tracker.Start{NS: 100}}

func (memberSource) Now() int64 { return 1e9 }
func (memberSource) Queue() []tracker.Agent {
	return []tracker.Agent{{PID: 10, Start: sid.Start, Comm: "claude", Reason: tracker.ReasonMaxAge, Deadline: 5e9, Session: sid}}
}
func (memberSource) Sessions() []tracker.SessionView {
	return []tracker.SessionView{{ID: sid, Comm: "claude", AgentAlive: true, Members: 3}}
}
func (memberSource) Lookup(pid int32) (tracker.Proc, bool) {
	return tracker.Proc{PID: pid, PPID: pid - 1, Start: tracker.Start{NS: int64(pid) * 10}, Comm: "c"}, true
}
func (memberSource) Latest() []resource.Session { return nil }
func (memberSource) SessionMembers(buf []tracker.Member) []tracker.Member {
	for _, pid := range []int32{10, 11, 12} {
		buf = append(buf, tracker.Member{Session: sid, PID: pid, Start: tracker.Start{NS: int64(pid) * 10}, Kept: pid == 12})
	}
	return buf
}
func (memberSource) MemberMemory(pid int32, _ tracker.Start) (int64, bool) {
	return int64(pid) << 20, pid != 11
}
func (memberSource) Cmdline(pid int32, _ tracker.Start) string {
	return "cmd " + string(rune('0'+pid-10))
}

func TestAgentsMembers(t *testing.T) {
	if v := Agents(memberSource{}, MemberQuery{}); len(v) != 1 || v[0].MemberList != nil {
		t.Fatalf("without members: %+v", v)
	}
	for _, q := range []MemberQuery{{All: true}, {PIDs: []int32{10}}} {
		v := Agents(memberSource{}, q)
		ml := v[0].MemberList
		if len(ml) != 3 || ml[0].PID != 10 || ml[1].PPID != 10 || !ml[2].Kept || ml[1].Kept || ml[1].MemoryBytes != nil ||
			*ml[2].MemoryBytes != 12<<20 || ml[2].Cmdline != "cmd 2" {
			t.Errorf("%+v: members %+v", q, ml)
		}
	}
	if v := Agents(memberSource{}, MemberQuery{PIDs: []int32{99}}); v[0].MemberList != nil {
		t.Errorf("another session's members: %+v", v[0].MemberList)
	}
}

func TestAgentsAndKillsHandlers(t *testing.T) {
	s := New(Config{Agents: func(q MemberQuery) []AgentView { return Agents(memberSource{}, q) },
		Kills: func() []store.KillRow { return []store.KillRow{{PID: 7, Reason: "manual"}} }, Metrics: http.NotFoundHandler()})
	h := s.routes()
	for path, code := range map[string]int{"/agents?members=all": 200, "/agents?members=1,x": 400, "/kills": 200} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != code {
			t.Errorf("%s: %d, want %d: %s", path, w.Code, code, w.Body)
		}
	}
}

// figureSource is memberSource with a sample: its agent's session, and
// two sessions with no /agents entry (their agents exited, no leftover
// queued), one of them being killed.
type figureSource struct{ memberSource }

var (
	sidKept    = tracker.SessionID{PID: 20, Start: tracker.Start{NS: 200}}
	sidKilling = tracker.SessionID{PID: 30, Start: tracker.Start{NS: 300}}
)

func (figureSource) Sessions() []tracker.SessionView {
	return append(memberSource{}.Sessions(), tracker.SessionView{ID: sidKept, Comm: "aider", ExitedAt: 5e8, Members: 1},
		tracker.SessionView{ID: sidKilling, Comm: "codex", ExitedAt: 5e8, Members: 2})
}
func (figureSource) Latest() []resource.Session {
	return []resource.Session{{ID: sid, Procs: 3, AgentAlive: true}, {ID: sidKept, Procs: 1},
		{ID: sidKilling, Procs: 2, Killing: true}}
}

// TestAgentsFiguresKilling: /agents says which sessions the daemon is
// killing ("killing"), so a session without a deadline is not taken for
// one being killed.
func TestAgentsFiguresKilling(t *testing.T) {
	got := map[int32]*SessionFigures{}
	for _, v := range Agents(figureSource{}, MemberQuery{}) {
		got[v.PID] = v.SessionFigures
	}
	if len(got) != 3 || got[10] == nil || got[10].Killing || got[20] == nil || got[20].Killing || got[30] == nil || !got[30].Killing {
		t.Fatalf("figures: %+v", got)
	}
}
