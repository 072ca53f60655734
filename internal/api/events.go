package api

import (
	"net/http"
	"time"
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
