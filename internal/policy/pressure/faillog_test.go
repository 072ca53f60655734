package pressure

import (
	"testing"
	"time"
)

// TestPressureFailLog: a failure that repeats every second is logged at
// Once, then once a minute, and the run's length is reported when it ends.
func TestPressureFailLog(t *testing.T) {
	var f failLog
	t0 := time.Unix(1000, 0)
	logged := 0
	for i := 0; i < 150; i++ { // 150 failures, one a second
		if f.fail(t0.Add(time.Duration(i) * time.Second)) {
			logged++
		}
	}
	if logged != 3 { // at 0 s, 60 s, 120 s
		t.Fatalf("150 failures over 150 s logged %d times; want 3", logged)
	}
	if n := f.ok(); n != 150 {
		t.Fatalf("ok() = %d; want the run's 150", n)
	}
	if n := f.ok(); n != 0 || !f.fail(t0.Add(151*time.Second)) {
		t.Fatalf("after ok() the next failure is logged at once (ok again = %d)", n)
	}
}
