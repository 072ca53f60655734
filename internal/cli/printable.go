package cli

import (
	"time"

	"github.com/agent-supervisor/supervisor/internal/termtext"
)

// printable makes text that came from processes safe for an operator's
// terminal (termtext.Printable).
func printable(s string) string { return termtext.Printable(s) }

func clipTo(s string, n int) string { return termtext.Clip(s, n) }

// short prints a duration in at most 8 characters: 1h52m, 8m05s, 4.2s.
func short(d time.Duration) string { return termtext.Duration(d, time.Minute) }
