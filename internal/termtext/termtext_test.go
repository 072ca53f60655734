package termtext

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"claude":                     "claude",
		"npm run agent:r":            "npm run agent:r",
		"évite ✓":                    "évite ✓",
		"x\x1b[2J\x1b[Hy":            `x\x1b[2J\x1b[Hy`,
		"fake\n12:00:00 kill pid=1":  `fake\n12:00:00 kill pid=1`,
		"tab\there\rback\x00nul\x7f": `tab\there\rback\x00nul\x7f`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
