//go:build linux

package reap

import (
	"sync"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// TestGoTimerStopRacingSet: Stop returns while many goroutines keep moving
// the deadline (far away, or disarming it) through Set. Before Set and Stop
// were ordered, a Set landing after Stop's wake-up re-armed the timerfd and
// Stop waited for Run forever.
func TestGoTimerStopRacingSet(t *testing.T) {
	for i := 0; i < 200; i++ {
		tm, err := newGoTimer(TimerConfig{Queue: &tracker.Deadlines{}, Clock: tracker.SystemClock{}, Fire: func([]*tracker.Agent) {}})
		if err != nil {
			t.Fatal(err)
		}
		ran := make(chan struct{})
		go func() { tm.Run(); close(ran) }()
		far := tracker.SystemClock{}.Now() + int64(time.Hour)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 8 {
			wg.Go(func() {
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					tm.Set(nil, far+int64(j)*int64(g%2)) // odd: far away; even: 0, disarmed
				}
			})
		}
		time.Sleep(time.Millisecond)
		stopped := make(chan struct{})
		go func() { tm.Stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Stop hung while Set raced it", i)
		}
		close(stop)
		wg.Wait()
		<-ran
	}
}

// TestGoTimerFires: the pure-Go timer fires a queued agent at its deadline,
// also one queued before Run starts.
func TestGoTimerFires(t *testing.T) {
	q := &tracker.Deadlines{}
	fired := make(chan *tracker.Agent, 1)
	tm, err := newGoTimer(TimerConfig{Queue: q, Clock: tracker.SystemClock{}, DryRun: true,
		Fire: func(due []*tracker.Agent) { fired <- due[0] }})
	if err != nil {
		t.Fatal(err)
	}
	dl := tracker.SystemClock{}.Now() + int64(50*time.Millisecond)
	q.Add(&tracker.Agent{PID: 1, FD: -1, Deadline: dl})
	go tm.Run()
	defer tm.Stop()
	select {
	case a := <-fired:
		if a.Fired < dl {
			t.Errorf("fired %d before the deadline %d", a.Fired, dl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not fired")
	}
}
