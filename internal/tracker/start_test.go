package tracker

import (
	"testing"
	"time"
)

// A Wall converts with the one offset it read: the boottime instant it
// read is its wall reading, and later instants are that far later.
func TestReadWallOneOffset(t *testing.T) {
	boot := int64(5e9)
	w := ReadWall(func() int64 { return boot })
	if w.Now() != boot {
		t.Fatalf("Now() = %d, want %d", w.Now(), boot)
	}
	if d := w.Time(boot + 3e9).Sub(w.Time(boot)); d != 3*time.Second {
		t.Errorf("3 s of boottime is %v of wall time", d)
	}
	if d := time.Since(w.Time(boot)); d < 0 || d > time.Hour {
		t.Errorf("the reading is %v old", d)
	}
}
