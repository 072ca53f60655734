package psi

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Line is one line of a pressure file.
type Line struct {
	Avg10, Avg60, Avg300 float64 // percent of wall time stalled over 10, 60, 300 s
	Total                uint64  // stall time since boot (or since the cgroup was made), µs
}

// Pressure is a pressure file. Full is absent from /proc/pressure/cpu before
// Linux 5.13 (and all zeros there since: full CPU stall is undefined for
// the whole system, psi.rst).
type Pressure struct {
	Some    Line
	Full    Line
	HasFull bool
}

// ErrFormat is wrapped by every parse error.
var ErrFormat = errors.New("malformed pressure file")

// Parse decodes the contents of a pressure file. Unknown keys on a line
// are skipped (the kernel may add some); a missing or repeated "some" line,
// a missing average or total, or a number that does not parse is an error.
func Parse(b []byte) (Pressure, error) {
	var p Pressure
	var hasSome bool
	for n := 1; len(b) > 0; n++ {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		kind, rest, _ := bytes.Cut(line, []byte{' '})
		var dst *Line
		switch string(kind) {
		case "some":
			if hasSome {
				return Pressure{}, fmt.Errorf("%w: line %d: second some line", ErrFormat, n)
			}
			dst, hasSome = &p.Some, true
		case "full":
			if p.HasFull {
				return Pressure{}, fmt.Errorf("%w: line %d: second full line", ErrFormat, n)
			}
			dst, p.HasFull = &p.Full, true
		default:
			return Pressure{}, fmt.Errorf("%w: line %d: starts with %q, want some or full", ErrFormat, n, clip(kind))
		}
		l, err := parseLine(rest)
		if err != nil {
			return Pressure{}, fmt.Errorf("%w: line %d (%s): %v", ErrFormat, n, kind, err)
		}
		*dst = l
	}
	if !hasSome {
		return Pressure{}, fmt.Errorf("%w: no some line", ErrFormat)
	}
	return p, nil
}

// parseLine reads "avg10=0.00 avg60=0.00 avg300=0.00 total=0".
func parseLine(b []byte) (Line, error) {
	var l Line
	const avg10, avg60, avg300, total = 1, 2, 4, 8
	var seen int
	for _, f := range bytes.Fields(b) {
		k, v, ok := bytes.Cut(f, []byte{'='})
		if !ok {
			return Line{}, fmt.Errorf("field %q is not key=value", clip(f))
		}
		var bit int
		var err error
		switch string(k) {
		case "avg10":
			bit = avg10
			l.Avg10, err = percent(v)
		case "avg60":
			bit = avg60
			l.Avg60, err = percent(v)
		case "avg300":
			bit = avg300
			l.Avg300, err = percent(v)
		case "total":
			bit = total
			l.Total, err = strconv.ParseUint(string(v), 10, 64)
		default:
			continue
		}
		if err != nil {
			return Line{}, fmt.Errorf("%s=%q: not a number", k, clip(v))
		}
		if seen&bit != 0 {
			return Line{}, fmt.Errorf("%s twice", k)
		}
		seen |= bit
	}
	if seen != avg10|avg60|avg300|total {
		return Line{}, errors.New("want avg10, avg60, avg300 and total")
	}
	return l, nil
}

// percent parses an average: the kernel prints it as %lu.%02lu, 0 to 100.
func percent(v []byte) (float64, error) {
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f < 0 || f > 100 || f != f {
		return 0, errors.New("bad percentage")
	}
	return f, nil
}

// clip keeps error messages short: the input may be anything.
func clip(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}
