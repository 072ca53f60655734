package control

import (
	"fmt"
	"strings"
	"time"
)

// ParseExtend reads an extend request's duration: positive, at most MaxExtend.
func ParseExtend(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 30m, 4h)", s)
	}
	if d <= 0 || d > MaxExtend {
		return 0, fmt.Errorf("duration %s must be positive and at most %s", d, MaxExtend)
	}
	return d, nil
}

// MaxExtend bounds one extend, as --max-age is bounded.
const MaxExtend = 365 * 24 * time.Hour // config.MaxMaxAge, as --max-age is bounded
