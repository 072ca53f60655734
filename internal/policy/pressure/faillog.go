package pressure

import "time"

// failLogEvery is how often a failure that keeps repeating is logged again
// (with the count in a row): the first one at once, then one line a
// minute, not one a second.
const failLogEvery = time.Minute

// failLog rate-limits the lines about a failure that repeats.
type failLog struct {
	n      uint64    // failures in a row
	logged time.Time // when the last line about them was logged
}

// fail counts a failure at now and reports whether to log it.
func (f *failLog) fail(now time.Time) bool {
	f.n++
	if f.logged.IsZero() || now.Sub(f.logged) >= failLogEvery {
		f.logged = now
		return true
	}
	return false
}

// ok ends a run of failures, returning its length (0: there was none).
func (f *failLog) ok() uint64 {
	n := f.n
	*f = failLog{}
	return n
}
