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
