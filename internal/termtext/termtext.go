package termtext

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Printable makes text that came from processes (names, command lines, an
// error that quotes them) safe for an operator's terminal: any user can
// name a process with escape sequences or newlines, which printed raw
// could forge or hide lines. Non-printable runes are shown escaped (\x1b,
// \n); printable text is unchanged.
func Printable(s string) string {
	if strings.IndexFunc(s, notPrintable) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if notPrintable(r) {
			q := strconv.QuoteRune(r) // '\x1b'
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func notPrintable(r rune) bool { return r != ' ' && !unicode.IsGraphic(r) }

// Clip cuts s to at most n bytes.
func Clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Duration prints d in a few characters: 4d, 1h52m, 8m05s, then, from
// wholeSeconds on, 42s, and below it 4.2s. A negative d has a minus sign.
func Duration(d, wholeSeconds time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	switch {
	case d >= 100*time.Hour:
		return fmt.Sprintf("%s%dd", neg, int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%s%dh%02dm", neg, int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%s%dm%02ds", neg, int(d.Minutes()), int(d.Seconds())%60)
	case d >= wholeSeconds:
		return fmt.Sprintf("%s%ds", neg, int(d.Seconds()))
	default:
		return fmt.Sprintf("%s%.1fs", neg, d.Seconds())
	}
}

// Bytes prints a size in at most 6 characters: 512K, 150M, 1.2G.
func Bytes(b int64) string {
	switch {
	case b >= 100<<30:
		return fmt.Sprintf("%dG", b>>30)
	case b >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%dM", b>>20)
	default:
		return fmt.Sprintf("%dK", b>>10)
	}
}
