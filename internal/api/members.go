package api

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Members on request: GET /agents?members=all, or ?members=PID[,PID...]
// (session PIDs, at most MaxMemberSessions), adds to each entry heading
// one of those sessions its live members (member_list): what supervisor
// top shows when a session is expanded, and --json. Without the parameter
// /agents is what it was, at no cost: the members' command lines are read
// from /proc only on request, at most MaxMembers per answer.

// MaxMemberSessions is how many sessions ?members=PID,... may name;
// MaxMembers how many members one answer lists in all (the rest are
// counted in members, not listed).
const (
	MaxMemberSessions = 32
	MaxMembers        = 4096
)

// MemberView is one live member of a session in /agents?members=.
type MemberView struct {
	PID       int32     `json:"pid"`
	PPID      int32     `json:"ppid"` // the parent at fork; 0 when unknown
	Comm      string    `json:"comm"`
	Cmdline   string    `json:"cmdline"`
	StartedAt time.Time `json:"started_at"`
	// MemoryBytes is its memory (anon RSS) at the latest resource sample;
	// absent when that sample did not read it.
	MemoryBytes *int64 `json:"memory_bytes,omitempty"`
	// Kept: root-kept (a --keep rule, a control-socket keep, or below
	// such a process): no policy but a manual kill touches it.
	Kept bool `json:"kept,omitempty"`
}

// MemberQuery is what ?members= asks for: every session (All) or the
// sessions headed by PIDs; the zero value asks for none.
type MemberQuery struct {
	All  bool
	PIDs []int32
}

func (q MemberQuery) wants(pid int32) bool {
	if q.All {
		return true
	}
	for _, p := range q.PIDs {
		if p == pid {
			return true
		}
	}
	return false
}

// ParseMemberQuery reads ?members=: "", "all" or PID[,PID...].
func ParseMemberQuery(v string) (MemberQuery, error) {
	switch v {
	case "":
		return MemberQuery{}, nil
	case "all":
		return MemberQuery{All: true}, nil
	}
	var q MemberQuery
	for _, f := range strings.Split(v, ",") {
		pid, err := strconv.ParseInt(f, 10, 32)
		if err != nil || pid <= 0 {
			return MemberQuery{}, fmt.Errorf("members: want all or PID[,PID...], got %.40q", v)
		}
		q.PIDs = append(q.PIDs, int32(pid))
	}
	if len(q.PIDs) > MaxMemberSessions {
		return MemberQuery{}, fmt.Errorf("members: at most %d sessions by PID (or all)", MaxMemberSessions)
	}
	return q, nil
}

// MemberSource is what member lists are read from: the table's members,
// the latest sample's memory of each, and a member's command line.
type MemberSource interface {
	SessionMembers(buf []tracker.Member) []tracker.Member
	MemberMemory(pid int32, start tracker.Start) (int64, bool)
	// Cmdline is the command line of pid if it still is the process that
	// started at start ("" otherwise).
	Cmdline(pid int32, start tracker.Start) string
}

// addMembers fills the member lists q asks for, in the table's order
// (agent first), at most MaxMembers in all.
func addMembers(src AgentSource, views []AgentView, q MemberQuery, w tracker.Wall) {
	ms, ok := src.(MemberSource)
	if !ok || (!q.All && len(q.PIDs) == 0) {
		return
	}
	heads := map[tracker.SessionID]int{}
	for i := range views {
		v := &views[i]
		if v.SessionPID == v.PID && v.session.PID == v.PID && q.wants(v.PID) {
			heads[v.session] = i
		}
	}
	if len(heads) == 0 {
		return
	}
	listed := 0
	for _, m := range ms.SessionMembers(nil) {
		i, ok := heads[m.Session]
		if !ok || listed >= MaxMembers {
			continue
		}
		mv := MemberView{PID: m.PID, StartedAt: w.Time(m.Start.NS), Kept: m.Kept, Comm: m.Comm}
		if p, ok := src.Lookup(m.PID); ok && p.Start.Same(m.Start) {
			mv.PPID, mv.Comm = p.PPID, p.Comm
		}
		if b, ok := ms.MemberMemory(m.PID, m.Start); ok {
			mv.MemoryBytes = &b
		}
		mv.Cmdline = ms.Cmdline(m.PID, m.Start)
		views[i].MemberList = append(views[i].MemberList, mv)
		listed++
	}
}
