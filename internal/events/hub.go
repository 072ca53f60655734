package events

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBuffer is the events a subscriber may have waiting before it is
// dropped: a few seconds of a busy host (a kill storm is one kill event
// per agent) for a client that reads at terminal speed.
const DefaultBuffer = 1024

// Hub fans events out to subscribers. Its methods are safe for concurrent
// use; Publish never blocks on a subscriber.
type Hub struct {
	size int

	mu      sync.Mutex
	subs    []*Sub
	closed  bool
	refused uint64 // subscribers turned away past MaxSubscribers

	want    atomic.Uint32 // the union of the subscribers' types: Publish's fast path
	clients atomic.Int64
	dropped atomic.Uint64
}

// NewHub returns a hub whose subscribers each buffer size events
// (DefaultBuffer if size < 1).
func NewHub(size int) *Hub {
	if size < 1 {
		size = DefaultBuffer
	}
	return &Hub{size: size}
}

// Refused counts subscribers turned away past MaxSubscribers.
func (h *Hub) Refused() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// Sub is one subscriber. Its events arrive on C, which is closed when the
// subscriber is dropped for being too slow, unsubscribes, or the hub closes.
type Sub struct {
	C <-chan Event

	c     chan Event
	types Types
	hub   *Hub
	// Guarded by hub.mu.
	done, dropped bool
}

// MaxSubscribers bounds the subscribers at once: each holds a buffer and
// costs every Publish a send, and /events is open to every local user.
const MaxSubscribers = 64

// ErrTooMany is Subscribe's answer past MaxSubscribers.
var ErrTooMany = errors.New("events: too many subscribers")

// Subscribe adds a subscriber for the given types, or returns ErrTooMany
// when MaxSubscribers are connected. On a closed hub the subscriber's
// channel is closed at once.
func (h *Hub) Subscribe(types Types) (*Sub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed && len(h.subs) >= MaxSubscribers {
		h.refused++
		return nil, ErrTooMany
	}
	s := &Sub{c: make(chan Event, h.size), types: types, hub: h}
	s.C = s.c
	if h.closed {
		s.done = true
		close(s.c)
		return s, nil
	}
	h.subs = append(h.subs, s)
	h.recountLocked()
	return s, nil
}

// Close unsubscribes s and closes its channel; events still buffered stay
// readable. Closing twice, or after a drop, does nothing.
func (s *Sub) Close() { s.end(false) }

// Drop drops s as too slow, as a full buffer does: its channel is closed
// and the drop counted. It does nothing if s is done already.
func (s *Sub) Drop() { s.end(true) }

// end unsubscribes s, dropped (and counted) as too slow or not; once s is
// done it does nothing.
func (s *Sub) end(dropped bool) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.done {
		return
	}
	s.dropped = dropped
	h.removeLocked(s)
	if dropped {
		h.dropped.Add(1)
	}
	h.recountLocked()
}

// Dropped reports whether s was dropped as too slow.
func (s *Sub) Dropped() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.dropped
}

// Wants reports whether any subscriber wants events of type t: a publisher
// may skip building an event nobody will see.
func (h *Hub) Wants(t Type) bool { return Types(h.want.Load()).Has(t) }

// Publish sends ev to every subscriber that wants its type, stamping its
// type and, if unset, its time. A subscriber whose buffer is full is
// dropped, never waited for. ev must not be changed afterwards: every
// subscriber shares it.
//
// Publish takes only the hub's own lock, which is held for nothing but
// these sends, so it may be called with other locks held.
func (h *Hub) Publish(ev Event) {
	kind := ev.Kind()
	if !h.Wants(kind) {
		return
	}
	hd := ev.header()
	hd.Type = kind
	if hd.Time.IsZero() {
		hd.Time = time.Now().UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	full := false
	for _, s := range h.subs {
		if !s.types.Has(kind) {
			continue
		}
		select {
		case s.c <- ev:
		default:
			s.dropped, full = true, true
		}
	}
	if !full {
		return
	}
	for i := 0; i < len(h.subs); {
		if s := h.subs[i]; s.dropped {
			h.removeLocked(s)
			h.dropped.Add(1)
			continue // removeLocked moved another subscriber to i
		}
		i++
	}
	h.recountLocked()
}

// removeLocked takes s out of the subscribers and closes its channel.
func (h *Hub) removeLocked(s *Sub) {
	for i, x := range h.subs {
		if x == s {
			last := len(h.subs) - 1
			h.subs[i] = h.subs[last]
			h.subs[last] = nil
			h.subs = h.subs[:last]
			break
		}
	}
	s.done = true
	close(s.c)
}

func (h *Hub) recountLocked() {
	var want Types
	for _, s := range h.subs {
		want |= s.types
	}
	h.want.Store(uint32(want))
	h.clients.Store(int64(len(h.subs)))
}

// Close closes every subscriber's channel; later subscribers get a closed
// channel. Publish does nothing afterwards.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for len(h.subs) > 0 {
		h.removeLocked(h.subs[0])
	}
	h.recountLocked()
}

// Clients is the number of subscribers.
func (h *Hub) Clients() int { return int(h.clients.Load()) }

// Dropped is the number of subscribers dropped for being too slow.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// Buffer is the events each subscriber may have waiting.
func (h *Hub) Buffer() int { return h.size }

// Errors Stream ends with.
var (
	// ErrDropped: the subscriber fell a whole buffer behind and was dropped.
	ErrDropped = errors.New("events: client too slow, dropped")
	// ErrClosed: the subscription ended (the hub closed: the daemon is
	// stopping).
	ErrClosed = errors.New("events: stream closed")
)

// maxBatch bounds the bytes Stream writes at once.
const maxBatch = 64 << 10

// Stream writes the events s receives to w, one JSON line each, and calls
// flush (if set) whenever no more are waiting, so a reader sees each event
// as it happens and a burst goes out in few writes. It returns nil when ctx
// ends, ErrDropped or ErrClosed when s's channel closes, or the error of a
// write. A write or flush that fails with os.ErrDeadlineExceeded (a writer
// that bounds each write) drops s as too slow. Either way, a write that
// fails after s was dropped returns ErrDropped. It unsubscribes s before
// returning.
func Stream(ctx context.Context, s *Sub, w io.Writer, flush func() error) error {
	defer s.Close()
	var buf []byte
	for {
		var ev Event
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case ev, ok = <-s.C:
		}
		buf = buf[:0]
		for {
			if !ok {
				// Write what came before the close, then say why.
				if len(buf) > 0 {
					_, _ = w.Write(buf)
				}
				if s.Dropped() {
					return ErrDropped
				}
				return ErrClosed
			}
			var err error
			if buf, err = AppendJSON(buf, ev); err != nil {
				return err
			}
			if len(buf) >= maxBatch || len(s.C) == 0 {
				break
			}
			ev, ok = <-s.C
		}
		_, err := w.Write(buf)
		if err == nil && flush != nil {
			err = flush()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.Drop()
			}
			if s.Dropped() {
				return ErrDropped
			}
			return err
		}
	}
}
