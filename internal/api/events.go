package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"go.uber.org/zap"
)

const (
	// EventWriteTimeout bounds each write to an /events client: a client
	// that stops reading is dropped by the hub within its buffer of
	// events, and its handler returns within this.
	EventWriteTimeout = 10 * time.Second
	// eventSndbuf is the send buffer asked for an /events connection
	// (socket(7) SO_SNDBUF; the kernel doubles it): a stuck client holds
	// this much in the kernel plus its buffer of events in the hub, and is
	// noticed that soon.
	eventSndbuf = 64 << 10
)

// serveEvents streams events as NDJSON until the client goes away, falls
// too far behind, or the daemon stops. ?types=kill,leftover filters.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	types, err := events.ParseTypes(r.URL.Query().Get("types"))
	if err != nil {
		http.Error(w, "types: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Per peer: a --control-group member has a few streams, root has
	// slots no one else can take (apisocket.go).
	if pc := requestPeer(r); pc != nil {
		release := s.state.stream(pc.peer.UID)
		if release == nil {
			s.state.warnRefusal(s.log, "event client refused: its uid has its most /events streams open",
				zap.Uint32("uid", pc.peer.UID), zap.Int("max", APIStreamsPerUID))
			http.Error(w, fmt.Sprintf("too many /events streams for uid %d (at most %d per user; root's are kept apart)",
				pc.peer.UID, APIStreamsPerUID), http.StatusTooManyRequests)
			return
		}
		defer release()
		_ = pc.SetWriteBuffer(eventSndbuf)
	}
	// Subscribed before the response starts: a client that has the
	// headers misses nothing that happens after.
	sub, err := s.cfg.Events.Subscribe(types)
	if err != nil {
		http.Error(w, fmt.Sprintf("too many /events clients (at most %d)", events.MaxSubscribers), http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_ = rc.SetWriteDeadline(time.Now().Add(EventWriteTimeout))
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		sub.Close()
		return
	}
	log := s.log.With(zap.Stringer("types", types))
	if pc := requestPeer(r); pc != nil {
		log = log.With(zap.Uint32("uid", pc.peer.UID), zap.Int32("peer_pid", pc.peer.PID))
	}
	log.Debug("event client connected", zap.Int("clients", s.cfg.Events.Clients()))
	err = events.Stream(r.Context(), sub, deadlineWriter{w, rc}, rc.Flush)
	switch {
	case errors.Is(err, events.ErrDropped):
		log.Warn("event client dropped as too slow: a whole buffer of events behind, or a write stuck",
			zap.Int("buffer", s.cfg.Events.Buffer()), zap.Duration("write_timeout", EventWriteTimeout))
	case errors.Is(err, events.ErrClosed), err == nil:
		log.Debug("event client done")
	default:
		log.Debug("event client gone", zap.Error(err))
	}
}

// deadlineWriter gives each write to an /events client its own deadline:
// the server's WriteTimeout would end the stream after that long in all.
type deadlineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (dw deadlineWriter) Write(p []byte) (int, error) {
	_ = dw.rc.SetWriteDeadline(time.Now().Add(EventWriteTimeout))
	return dw.w.Write(p)
}
