package events

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
)

func lost(n uint64) *Lost { return &Lost{Events: n, Total: n} }

func TestFanOut(t *testing.T) {
	h := NewHub(100)
	subs := []*Sub{must(h.Subscribe(All)), must(h.Subscribe(All)), must(h.Subscribe(All))}
	if h.Clients() != 3 {
		t.Fatalf("clients %d, want 3", h.Clients())
	}
	for i := uint64(1); i <= 50; i++ {
		h.Publish(lost(i))
	}
	for n, s := range subs {
		for i := uint64(1); i <= 50; i++ {
			ev := (<-s.C).(*Lost)
			if ev.Events != i || ev.Type != TypeLost || ev.Time.IsZero() {
				t.Fatalf("subscriber %d event %d: %+v", n, i, ev)
			}
		}
		if len(s.C) != 0 {
			t.Errorf("subscriber %d: %d extra events", n, len(s.C))
		}
	}
}

func TestFilter(t *testing.T) {
	h := NewHub(10)
	if h.Wants(TypeKill) {
		t.Fatal("no subscriber, yet the hub wants kills")
	}
	kills := must(h.Subscribe(must(ParseTypes("kill"))))
	both := must(h.Subscribe(must(ParseTypes("kill, leftover"))))
	if !h.Wants(TypeKill) || !h.Wants(TypeLeftover) || h.Wants(TypeAgent) {
		t.Fatalf("wants: kill %v leftover %v agent %v", h.Wants(TypeKill), h.Wants(TypeLeftover), h.Wants(TypeAgent))
	}
	h.Publish(&Agent{PID: 1})
	h.Publish(&Leftover{PID: 2})
	h.Publish(&Kill{KillRow: store.KillRow{PID: 3}})
	if got := (<-kills.C).(*Kill).PID; got != 3 || len(kills.C) != 0 {
		t.Errorf("kill subscriber got pid %d and %d more", got, len(kills.C))
	}
	if got := (<-both.C).(*Leftover).PID; got != 2 {
		t.Errorf("kill,leftover subscriber: first pid %d, want the leftover 2", got)
	}
	if got := (<-both.C).(*Kill).PID; got != 3 || len(both.C) != 0 {
		t.Errorf("kill,leftover subscriber: second pid %d, want the kill 3", got)
	}
	both.Close()
	if h.Wants(TypeLeftover) || !h.Wants(TypeKill) {
		t.Error("wants not recomputed after an unsubscribe")
	}
}

func TestParseTypes(t *testing.T) {
	for in, want := range map[string]Types{"": All, " , ": All, "kill": TypeKill.bit(), "kill,leftover,kill": TypeKill.bit() | TypeLeftover.bit()} {
		if got, err := ParseTypes(in); err != nil || got != want {
			t.Errorf("ParseTypes(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	_, err := ParseTypes("kill,kills")
	if err == nil || !strings.Contains(err.Error(), `"kills"`) {
		t.Errorf("unknown type: error %v, want it named", err)
	}
	if All.Len() != len(AllTypes) || All.String() != "agent,deadline,leftover,kill,snapshot,resync,pressure,lost" {
		t.Errorf("All = %s (%d)", All, All.Len())
	}
}

// A subscriber that never reads is dropped when its buffer is full, while
// one that keeps up gets every event, and Publish never waits.
func TestSlowClientDropped(t *testing.T) {
	const size, n = 16, 5000
	h := NewHub(size)
	slow := must(h.Subscribe(All))
	fast := must(h.Subscribe(All))
	for i := uint64(1); i <= n; i++ {
		h.Publish(lost(i))
		// The fast client reads each event before the next: it is never
		// behind, whatever the machine's load.
		if ev, ok := <-fast.C; !ok || ev.(*Lost).Events != i {
			t.Fatalf("fast client: event %d: %v %v", i, ev, ok)
		}
	}
	if !slow.Dropped() || fast.Dropped() {
		t.Fatalf("dropped: slow %v fast %v", slow.Dropped(), fast.Dropped())
	}
	if h.Dropped() != 1 || h.Clients() != 1 {
		t.Fatalf("hub: dropped %d clients %d, want 1 and 1", h.Dropped(), h.Clients())
	}
	// The slow client keeps the events it had, in order, then sees the close.
	var got uint64
	for ev := range slow.C {
		got++
		if ev.(*Lost).Events != got {
			t.Fatalf("slow client event %d: %+v", got, ev)
		}
	}
	if got != size {
		t.Errorf("slow client had %d events buffered, want %d", got, size)
	}
	slow.Close() // after a drop: nothing
	if h.Dropped() != 1 || h.Clients() != 1 {
		t.Errorf("close after drop changed the counts: %d %d", h.Dropped(), h.Clients())
	}
}

// Publish costs the same with a stuck subscriber as without: it never
// waits for one.
func TestPublishNeverBlocks(t *testing.T) {
	h := NewHub(4)
	for i := 0; i < 8; i++ {
		_ = must(h.Subscribe(All)) // never read
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100_000; i++ {
			h.Publish(lost(1))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("100000 publishes to stuck subscribers took over 20 s")
	}
	if h.Dropped() != 8 || h.Clients() != 0 || h.Wants(TypeLost) {
		t.Errorf("dropped %d clients %d: want every stuck subscriber dropped", h.Dropped(), h.Clients())
	}
}

func TestCloseHub(t *testing.T) {
	h := NewHub(4)
	s := must(h.Subscribe(All))
	h.Publish(lost(1))
	h.Close()
	if ev, ok := <-s.C; !ok || ev.(*Lost).Events != 1 {
		t.Fatalf("buffered event lost at close: %v %v", ev, ok)
	}
	if _, ok := <-s.C; ok {
		t.Fatal("channel open after the hub closed")
	}
	if s.Dropped() || h.Dropped() != 0 {
		t.Error("a close counted as a drop")
	}
	late := must(h.Subscribe(All))
	if _, ok := <-late.C; ok {
		t.Error("subscribing to a closed hub gave an open channel")
	}
	h.Publish(lost(2)) // no panic on closed channels
}

// The JSON of each event is one line starting with its type and time.
func TestJSON(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	pid := int32(7)
	evs := []Event{
		&Agent{PID: 1, Comm: "claude", Rule: "claude", StartedAt: at, Deadline: at.Add(time.Hour), SessionPID: 1},
		&Deadline{PID: 1, Cause: "reload", Reason: "max_age", Previous: at, Deadline: at},
		&Leftover{PID: 2, SessionPID: 1, KillAt: at},
		&Kill{KillRow: store.KillRow{PID: 1, Comm: "claude", Outcome: "terminated", Reason: "max_age", Descendants: []int32{3}, SessionPID: &pid}},
		&Snapshot{Status: "ok", Details: json.RawMessage(`{"zombies":0}`)},
		&Resync{TookMS: 1.5, Processes: 100, EventsLost: 3, Resyncs: 1},
		&Pressure{Resource: "memory", SomeAvg10: 12.5},
		&Lost{Events: 3, Total: 9},
	}
	h := NewHub(len(evs))
	s := must(h.Subscribe(All))
	for _, ev := range evs {
		ev.header().Time = at
		h.Publish(ev)
	}
	seen := map[Type]bool{}
	for range evs {
		ev := <-s.C
		b, err := AppendJSON(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		line := string(b)
		prefix := `{"type":"` + string(ev.Kind()) + `","time":"2025-01-02T03:04:05.000000006Z",`
		if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("%s: %q, want one line starting %q", ev.Kind(), line, prefix)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("%s: %v", ev.Kind(), err)
		}
		seen[ev.Kind()] = true
	}
	if len(seen) != len(AllTypes) {
		t.Errorf("types seen %v, want all %v", seen, AllTypes)
	}
	b, _ := AppendJSON(nil, evs[3])
	for _, k := range []string{`"pid":1`, `"outcome":"terminated"`, `"descendants":[3]`, `"session_pid":7`, `"reason":"max_age"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("kill line %s lacks %s", b, k)
		}
	}
}

// goroutines waits for the goroutine count to come back to n.
func goroutines(t *testing.T, n int) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(end) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStream(t *testing.T) {
	base := runtime.NumGoroutine()
	h := NewHub(64)

	// Until the context ends: every event as a line, flushed.
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := must(h.Subscribe(All))
	var flushes int
	errc := make(chan error, 1)
	go func() { errc <- Stream(ctx, s, pw, func() error { flushes++; return nil }) }()
	sc := bufio.NewScanner(pr)
	for i := uint64(1); i <= 3; i++ {
		h.Publish(lost(i))
		if !sc.Scan() {
			t.Fatal(sc.Err())
		}
		var l Lost
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Events != i || l.Type != TypeLost {
			t.Fatalf("line %d: %s %v", i, sc.Bytes(), err)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("stream ended by its context: %v", err)
	}
	if flushes < 3 || h.Clients() != 0 {
		t.Errorf("flushes %d (want one per event when idle), clients %d after return", flushes, h.Clients())
	}

	// Until the hub closes.
	s = must(h.Subscribe(All))
	go func() { errc <- Stream(context.Background(), s, io.Discard, nil) }()
	h.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("stream at hub close: %v, want ErrClosed", err)
	}
	pr.Close()
	goroutines(t, base)
}

// A stream whose writer is stuck is dropped; once the write returns, Stream
// says so and returns.
func TestStreamDropped(t *testing.T) {
	base := runtime.NumGoroutine()
	h := NewHub(8)
	pr, pw := io.Pipe() // nobody reads: the first write blocks
	s := must(h.Subscribe(All))
	errc := make(chan error, 1)
	go func() { errc <- Stream(context.Background(), s, pw, nil) }()
	for i := uint64(1); i <= 100; i++ {
		h.Publish(lost(i))
	}
	if h.Dropped() != 1 {
		t.Fatalf("dropped %d, want the stuck stream", h.Dropped())
	}
	pr.CloseWithError(errors.New("connection reset"))
	if err := <-errc; !errors.Is(err, ErrDropped) {
		t.Errorf("stream of a dropped client returned %v, want ErrDropped", err)
	}

	// A write that times out drops the client too, buffer full or not.
	pr, pw = io.Pipe()
	s = must(h.Subscribe(All))
	go func() { errc <- Stream(context.Background(), s, pw, nil) }()
	h.Publish(lost(1))
	pr.CloseWithError(os.ErrDeadlineExceeded) // what a write deadline does
	if err := <-errc; !errors.Is(err, ErrDropped) || h.Dropped() != 2 || h.Clients() != 0 {
		t.Errorf("stream whose write timed out: %v, dropped %d, clients %d; want ErrDropped, 2, 0", err, h.Dropped(), h.Clients())
	}
	// A client that goes away is not a drop.
	pr, pw = io.Pipe()
	s = must(h.Subscribe(All))
	go func() { errc <- Stream(context.Background(), s, pw, nil) }()
	pr.CloseWithError(errors.New("connection reset"))
	h.Publish(lost(1))
	if err := <-errc; err == nil || errors.Is(err, ErrDropped) || h.Dropped() != 2 {
		t.Errorf("stream whose client left: %v, dropped %d; want the write's error, 2", err, h.Dropped())
	}
	goroutines(t, base)
}

// Publishers, subscribers and drops all at once, for -race.
func TestConcurrent(t *testing.T) {
	base := runtime.NumGoroutine()
	h := NewHub(32)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					h.Publish(&Kill{KillRow: store.KillRow{PID: 1}})
					h.Publish(lost(1))
				}
			}
		})
	}
	var readers sync.WaitGroup
	for i := 0; i < 50; i++ {
		s := must(h.Subscribe(All))
		if i%2 == 0 {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for range s.C {
				}
			}()
		} else if i%3 == 0 {
			s.Close()
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	h.Close()
	readers.Wait()
	if h.Clients() != 0 {
		t.Errorf("clients %d after close", h.Clients())
	}
	goroutines(t, base)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkPublish is the publisher's cost (what the table pays under its
// lock for an agent found) with n subscribers, buffered deep enough that
// none is dropped.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{0, 1, 8} {
		b.Run(strconv.Itoa(n)+"subs", func(b *testing.B) {
			h := NewHub(1 << 20)
			for range n {
				s := must(h.Subscribe(All))
				go func() {
					for range s.C {
					}
				}()
			}
			b.ReportAllocs()
			for b.Loop() {
				h.Publish(&Agent{PID: 1, Comm: "claude"})
			}
			b.ReportMetric(float64(h.Dropped()), "dropped")
			h.Close()
		})
	}
}

// /events is open to every local user: past MaxSubscribers a subscriber is
// refused and counted, and a place frees up when one leaves.
func TestSubscriberCap(t *testing.T) {
	h := NewHub(1)
	var subs []*Sub
	for range MaxSubscribers {
		subs = append(subs, must(h.Subscribe(All)))
	}
	if _, err := h.Subscribe(All); !errors.Is(err, ErrTooMany) || h.Refused() != 1 {
		t.Fatalf("subscriber %d: %v, refused %d; want ErrTooMany, 1", MaxSubscribers+1, err, h.Refused())
	}
	subs[0].Close()
	if _, err := h.Subscribe(All); err != nil {
		t.Fatalf("after one left: %v", err)
	}
}

// New knows every type, and nothing else: the events client decodes
// through it.
func TestNew(t *testing.T) {
	for _, typ := range AllTypes {
		if ev := New(typ); ev == nil || ev.Kind() != typ {
			t.Errorf("New(%q) = %#v", typ, ev)
		}
	}
	if ev := New("bogus"); ev != nil {
		t.Errorf("New(bogus) = %#v, want nil", ev)
	}
}
