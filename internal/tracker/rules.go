package tracker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
)

// Rule says which processes are agents: Comm matches the process name
// exactly, or as a prefix when Prefix; Text, when set, must also occur in the
// command line. The textual form is COMM, COMM* or either followed by :TEXT
// ("claude", "npm*:agent").
type Rule struct {
	Comm   string
	Prefix bool
	Text   string
}

// DefaultRules reproduce the seed job: claude subprocesses, and npm
// processes whose command line mentions "agent".
var DefaultRules = []Rule{{Comm: "claude"}, {Comm: "npm", Prefix: true, Text: "agent"}}

// commLen is TASK_COMM_LEN - 1: longer names are cut by the kernel, so a
// rule naming more characters could never match.
const commLen = 15

// ParseRule parses COMM, COMM*, COMM:TEXT or COMM*:TEXT.
func ParseRule(s string) (Rule, error) {
	var r Rule
	name, text, hasText := strings.Cut(s, ":")
	if hasText {
		if text == "" {
			return r, fmt.Errorf("rule %q: empty text after ':'", s)
		}
		r.Text = text
	}
	if strings.HasSuffix(name, "*") {
		r.Prefix = true
		name = strings.TrimSuffix(name, "*")
	}
	switch {
	case name == "":
		return r, fmt.Errorf("rule %q: empty process name", s)
	case strings.ContainsAny(name, "*\x00/"):
		return r, fmt.Errorf("rule %q: '*' is only allowed at the end and a name has no '/'", s)
	case len(name) > commLen:
		return r, fmt.Errorf("rule %q: process names are at most %d bytes (the kernel cuts comm)", s, commLen)
	}
	r.Comm = name
	return r, nil
}

// ParseRules parses a list of rules; an empty list is an error.
func ParseRules(ss []string) ([]Rule, error) {
	if len(ss) == 0 {
		return nil, errors.New("no agent rules")
	}
	rs := make([]Rule, 0, len(ss))
	for _, s := range ss {
		r, err := ParseRule(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func (r Rule) String() string {
	s := r.Comm
	if r.Prefix {
		s += "*"
	}
	if r.Text != "" {
		s += ":" + r.Text
	}
	return s
}

// MatchComm reports whether the name part of the rule matches comm.
func (r Rule) MatchComm(comm string) bool {
	if r.Prefix {
		return strings.HasPrefix(comm, r.Comm)
	}
	return comm == r.Comm
}

// Ancestor limits agents to descendants of a process, by PID when PID > 0,
// else by comm; or, when Cgroup is set, to processes whose own cgroup v2
// path matches the glob. Its textual form is a number, a name, or
// cgroup:GLOB.
type Ancestor struct {
	PID    int32
	Comm   string
	Cgroup cgroupinfo.Glob
}

// cgroupPrefix marks a cgroup ancestor: cgroup:/kubepods*.
const cgroupPrefix = "cgroup:"

// ParseAncestor parses a PID, a process name or cgroup:GLOB.
func ParseAncestor(s string) (Ancestor, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ancestor{}, errors.New("empty ancestor")
	}
	if glob, ok := strings.CutPrefix(s, cgroupPrefix); ok {
		g, err := cgroupinfo.ParseGlob(glob)
		if err != nil {
			return Ancestor{}, fmt.Errorf("ancestor %q: %w", s, err)
		}
		return Ancestor{Cgroup: g}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		if n <= 0 {
			return Ancestor{}, fmt.Errorf("ancestor pid %d: must be positive", n)
		}
		return Ancestor{PID: int32(n)}, nil
	}
	if len(s) > commLen {
		return Ancestor{}, fmt.Errorf("ancestor %q: process names are at most %d bytes", s, commLen)
	}
	return Ancestor{Comm: s}, nil
}

func (a Ancestor) String() string {
	switch {
	case a.Cgroup.String() != "":
		return cgroupPrefix + a.Cgroup.String()
	case a.PID > 0:
		return strconv.Itoa(int(a.PID))
	}
	return a.Comm
}

// agentRules are the agent rules and the scope in force (Config.Rules and
// Under, then SetRules): what makes a process an agent (Table.matchLocked),
// and what a reload judges agents by again (rejudge.go). They are guarded
// by the table's lock: every method runs with it held (…Locked).
type agentRules struct {
	rules []Rule
	under []Ancestor
	proc  ProcReader // command lines, read under the lock
}

// matchLocked returns the rule p matches now, reading its command line
// if a rule's name matches and it is not known (or readCmdline). A failed
// read is returned, not judged a mismatch.
func (r *agentRules) matchLocked(p *Proc, readCmdline bool) (string, bool, error) {
	if p.Kthread {
		return "", false, nil
	}
	for _, ru := range r.rules {
		if !ru.MatchComm(p.Comm) {
			continue
		}
		if p.Cmdline == "" || readCmdline {
			cl, err := r.proc.Cmdline(p.PID)
			if err != nil {
				return "", false, err
			}
			p.Cmdline = cl
			readCmdline = false
		}
		if ru.Text == "" || strings.Contains(p.Cmdline, ru.Text) {
			return ru.String(), true, nil
		}
	}
	return "", false, nil
}

// inForceLocked reports whether rule (its textual form) is one of the
// rules in force.
func (r *agentRules) inForceLocked(rule string) bool {
	for _, ru := range r.rules {
		if ru.String() == rule {
			return true
		}
	}
	return false
}

// judgeLocked says whether an agent matched by rule as comm and cmdline is
// an agent under the rules in force, and by which rule.
func (r *agentRules) judgeLocked(rule, comm, cmdline string, kthread bool) (string, bool) {
	if kthread {
		return "", false
	}
	if r.inForceLocked(rule) {
		return rule, true
	}
	for _, ru := range r.rules {
		if ru.MatchComm(comm) && (ru.Text == "" || strings.Contains(cmdline, ru.Text)) {
			return ru.String(), true
		}
	}
	return "", false
}

// cgroupScopeLocked: a cgroup glob is among the Under ancestors.
func (r *agentRules) cgroupScopeLocked() bool {
	for _, u := range r.under {
		if u.Cgroup.String() != "" {
			return true
		}
	}
	return false
}

// underLocked reports whether p is in scope: it descends from a process
// matching one of the PID or name Under ancestors, or its own cgroup (cg,
// as read at this match) matches one of the cgroup globs. Always true when
// there are none.
func (r *agentRules) underLocked(p *Proc, cg cgroupinfo.Info) bool {
	if len(r.under) == 0 {
		return true
	}
	for _, u := range r.under {
		if u.Cgroup.String() != "" && cg.Path != "" && u.Cgroup.Match(cg.Path) {
			return true
		}
	}
	for a := p.parent; a != nil; a = a.parent {
		for _, u := range r.under {
			if (u.PID > 0 && a.PID == u.PID) || (u.PID == 0 && u.Comm != "" && a.Comm == u.Comm) {
				return true
			}
		}
	}
	return false
}
