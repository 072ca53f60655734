package cgroupinfo

import (
	"fmt"
	"strings"
)

// Glob matches cgroup paths: '*' matches any run of characters, '/'
// included ("/kubepods*" matches every pod's cgroup at any depth); every
// other character matches itself. '?' and '[' are not special: they are
// legal in cgroup names and a shell-style class would rarely be meant. The
// glob matches the whole path.
type Glob struct {
	pattern string
	parts   []string // pattern split at '*'
}

// ParseGlob checks a glob: it is not empty, holds no control character
// and starts with '/' or '*' (a v2 path starts with '/': a glob that
// cannot match one is a mistake).
func ParseGlob(s string) (Glob, error) {
	switch {
	case s == "":
		return Glob{}, fmt.Errorf("cgroup glob: empty")
	case s[0] != '/' && s[0] != '*':
		return Glob{}, fmt.Errorf("cgroup glob %q: must start with '/' or '*' (cgroup v2 paths start with '/')", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return Glob{}, fmt.Errorf("cgroup glob %q: control character at byte %d", s, i)
		}
	}
	return Glob{pattern: s, parts: strings.Split(s, "*")}, nil
}

// String returns the glob as given.
func (g Glob) String() string { return g.pattern }

// Match reports whether the whole of path matches. Greedy matching of each
// literal part at its first occurrence is exact for a '*'-only glob and
// linear in the path's length. A relative path ("/../..", read in a cgroup
// namespace whose root could not be resolved, namespace.go) matches
// nothing, not even "*": where it lies on the host is unknown, and a glob
// is written for host paths.
func (g Glob) Match(path string) bool {
	if g.parts == nil || Relative(path) {
		return false
	}
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(g.parts) == 1 {
		return path == first
	}
	if len(path) < len(first)+len(last) || !strings.HasPrefix(path, first) || !strings.HasSuffix(path, last) {
		return false
	}
	rest := path[len(first) : len(path)-len(last)]
	for _, p := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}
