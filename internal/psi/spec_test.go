package psi

import (
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	valid := []struct {
		in, kernel string
		want       Spec
	}{
		{"some 150ms 1s", "some 150000 1000000", Spec{Stall: 150 * time.Millisecond, Window: time.Second}},
		{"full 50ms 500ms", "full 50000 500000", Spec{Full: true, Stall: 50 * time.Millisecond, Window: 500 * time.Millisecond}},
		{"  some   10s 10s ", "some 10000000 10000000", Spec{Stall: 10 * time.Second, Window: 10 * time.Second}},
		{"some 1us 2s", "some 1 2000000", Spec{Stall: time.Microsecond, Window: 2 * time.Second}},
	}
	for _, tc := range valid {
		got, err := ParseSpec(tc.in)
		if err != nil || got != tc.want || got.Kernel() != tc.kernel {
			t.Errorf("ParseSpec(%q) = %+v (%q), %v; want %+v (%q)", tc.in, got, got.Kernel(), err, tc.want, tc.kernel)
		}
		if again, err := ParseSpec(got.String()); err != nil || again != got {
			t.Errorf("ParseSpec(%q) (String of %q) = %+v, %v", got.String(), tc.in, again, err)
		}
	}
	for _, tc := range []struct{ in, names string }{
		{"", "want \"some|full STALL WINDOW\""},
		{"some 150ms", "want \"some|full STALL WINDOW\""},
		{"some 150ms 1s 2s", "want \"some|full STALL WINDOW\""},
		{"most 150ms 1s", `kind "most"`},
		{"some 150 1s", `stall "150"`},
		{"some 150ms 1", `window "1"`},
		{"some 150ms 499ms", "window 499ms: must be from 500ms to 10s"},
		{"some 1s 10.001s", "window 10.001s"},
		{"some 2s 1s", "stall 2s: must be positive and at most the window (1s)"},
		{"some 0s 1s", "stall 0s"},
		{"some -1ms 1s", "stall -1ms"},
		{"some 1500ns 1s", "stall 1.5µs: not a whole number of microseconds"},
	} {
		_, err := ParseSpec(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("ParseSpec(%q) = %v; want an error containing %q", tc.in, err, tc.names)
		}
	}
}
