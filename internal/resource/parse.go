package resource

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrParse means a /proc file did not have the expected shape.
var ErrParse = errors.New("parse /proc")

// Stat is what the sampler takes from /proc/PID/stat (proc(5)).
type Stat struct {
	UTime, STime uint64 // clock ticks, all threads (the tgid's stat sums them)
	StartTicks   uint64 // starttime: clock ticks after boot
	RSSPages     int64  // rss: resident pages
}

// ParseStat parses /proc/PID/stat without allocating. The comm, between
// the first '(' and the last ')', may hold spaces and parentheses.
func ParseStat(b []byte) (Stat, error) {
	close := bytes.LastIndexByte(b, ')')
	if close < 0 || close+2 > len(b) {
		return Stat{}, fmt.Errorf("%w: stat: no (comm)", ErrParse)
	}
	var st Stat
	// Fields after the comm, counted from 0 (proc(5) numbers them from 3):
	// utime 11, stime 12, starttime 19, rss 21.
	field := 0
	var v uint64
	digits := false
	for _, c := range b[close+2:] {
		if c >= '0' && c <= '9' {
			v = v*10 + uint64(c-'0')
			digits = true
			continue
		}
		if c != ' ' && c != '\n' {
			if field == 11 || field == 12 || field == 19 || field == 21 {
				return Stat{}, fmt.Errorf("%w: stat: field %d: %q", ErrParse, field+3, c)
			}
			continue // the state letter, a sign (tpgid, priority, nice)
		}
		switch field {
		case 11:
			st.UTime = v
		case 12:
			st.STime = v
		case 19:
			st.StartTicks = v
		case 21:
			st.RSSPages = int64(v)
			if !digits {
				return Stat{}, fmt.Errorf("%w: stat: rss", ErrParse)
			}
			return st, nil
		}
		field++
		v, digits = 0, false
	}
	return Stat{}, fmt.Errorf("%w: stat: %d fields, want 24", ErrParse, field+2)
}

// ParseStatm parses /proc/PID/statm: size resident shared text lib data dt,
// in pages. It returns resident and shared (file-backed and shmem pages).
func ParseStatm(b []byte) (resident, shared int64, err error) {
	var f [3]int64
	field := 0
	var v int64
	digits := false
	for _, c := range b {
		if c >= '0' && c <= '9' {
			v = v*10 + int64(c-'0')
			digits = true
			continue
		}
		if !digits || (c != ' ' && c != '\n') {
			return 0, 0, fmt.Errorf("%w: statm: %q", ErrParse, b)
		}
		f[field] = v
		field++
		if field == 3 {
			return f[1], f[2], nil
		}
		v, digits = 0, false
	}
	return 0, 0, fmt.Errorf("%w: statm: %q", ErrParse, b)
}
