package cli

import (
	"strconv"
	"strings"
	"unicode"
)

// printable makes text that came from processes (names, command lines, an
// error that quotes them) safe for an operator's terminal: any user can
// name a process with escape sequences or newlines, which printed raw
// could forge or hide lines. Non-printable runes are shown escaped (\x1b,
// \n); printable text is unchanged.
func printable(s string) string {
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
