package psi

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Pressure
		err  bool
	}{
		{name: "idle", in: []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
			want: Pressure{HasFull: true}},
		{name: "under the rig", in: []byte("some avg10=21.57 avg60=6.98 avg300=1.62 total=5182507\n" +
			"full avg10=17.60 avg60=6.00 avg300=1.43 total=4458739\n"),
			want: Pressure{Some: Line{21.57, 6.98, 1.62, 5182507}, Full: Line{17.60, 6.00, 1.43, 4458739}, HasFull: true}},
		{name: "cpu before 5.13: no full line", in: []byte("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n"),
			want: Pressure{Some: Line{1, 2, 3, 4}}},
		{name: "no trailing newline, unknown key skipped", in: []byte("some avg10=100.00 avg60=0.50 avg300=0.01 total=18446744073709551615 avg3600=1.00"),
			want: Pressure{Some: Line{100, 0.5, 0.01, 18446744073709551615}}},
		{name: "empty", in: []byte(""), err: true},
		{name: "only full", in: []byte("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "two some lines", in: []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "unknown kind", in: []byte("many avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "missing total", in: []byte("some avg10=0.00 avg60=0.00 avg300=0.00\n"), err: true},
		{name: "avg twice", in: []byte("some avg10=0.00 avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "not a number", in: []byte("some avg10=x avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "over 100 %", in: []byte("some avg10=100.01 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "NaN", in: []byte("some avg10=NaN avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "negative total", in: []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n"), err: true},
		{name: "field without =", in: []byte("some avg10 avg60=0.00 avg300=0.00 total=0\n"), err: true},
		{name: "EOPNOTSUPP text is not a file", in: []byte("Operation not supported\n"), err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.err {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("Parse = %+v, %v; want an ErrFormat error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("some avg10=21.57 avg60=6.98 avg300=1.62 total=5182507\nfull avg10=17.60 avg60=6.00 avg300=1.43 total=4458739\n"))
	f.Add([]byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"))
	f.Add([]byte("full avg10=1e2 avg60=0x1p-2 avg300=0 total=0\nsome\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		for _, l := range []Line{p.Some, p.Full} {
			for _, v := range []float64{l.Avg10, l.Avg60, l.Avg300} {
				if !(v >= 0 && v <= 100) {
					t.Fatalf("average %v out of [0, 100] from %q", v, b)
				}
			}
		}
	})
}
