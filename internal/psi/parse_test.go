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
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := Parse(tc.in); err != nil || got != tc.want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	// Not a pressure file: ErrFormat.
	for name, in := range map[string]string{
		"empty":                         "",
		"only full":                     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"two some lines":                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"unknown kind":                  "many avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"missing total":                 "some avg10=0.00 avg60=0.00 avg300=0.00\n",
		"avg twice":                     "some avg10=0.00 avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"not a number":                  "some avg10=x avg60=0.00 avg300=0.00 total=0\n",
		"over 100 %":                    "some avg10=100.01 avg60=0.00 avg300=0.00 total=0\n",
		"NaN":                           "some avg10=NaN avg60=0.00 avg300=0.00 total=0\n",
		"negative total":                "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n",
		"field without =":               "some avg10 avg60=0.00 avg300=0.00 total=0\n",
		"EOPNOTSUPP text is not a file": "Operation not supported\n",
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := Parse([]byte(in)); !errors.Is(err, ErrFormat) {
				t.Fatalf("Parse = %+v, %v; want an ErrFormat error", got, err)
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
