package top

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// TestFollowStreamOrderAndReconnect runs followStream against an HTTP
// server on a real unix socket: /kills is read only once /events has
// answered (subscribed first), and when the stream ends it is opened
// again and /kills read again; kills from the stream arrive as killMsg.
func TestFollowStreamOrderAndReconnect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	streams := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		note("/events")
		mu.Lock()
		streams++
		n := streams
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if n == 1 {
			return // the first stream ends at once: top reconnects
		}
		fmt.Fprintf(w, `{"type":"kill","time":"2026-12-07T12:00:00Z","pid":4321,"comm":"claude","reason":"manual","outcome":"terminated"}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /kills", func(w http.ResponseWriter, r *http.Request) {
		note("/kills")
		json.NewEncoder(w).Encode([]map[string]any{{"pid": 1234, "reason": "max_age", "signalled_at": "2026-12-07T11:59:00Z"}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	msgs := make(chan tea.Msg, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { followStream(ctx, newDaemonSource(sock, ""), func(m tea.Msg) { msgs <- m }); close(done) }()
	defer func() { cancel(); <-done }()

	want := []string{"streamUp", "stream", "streamUp", "kill"}
	for i, w := range want {
		var got tea.Msg
		select {
		case got = <-msgs:
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d (%s): none within 30s", i, w)
		}
		switch m := got.(type) {
		case streamUpMsg:
			if w != "streamUp" || len(m) != 1 || m[0].PID != 1234 {
				t.Fatalf("message %d: %+v, want %s", i, m, w)
			}
		case streamMsg:
			if w != "stream" || m.retry != reconnectMin || m.err == nil {
				t.Fatalf("message %d: %+v, want %s", i, m, w)
			}
		case killMsg:
			if w != "kill" || m.PID != 4321 || m.Reason != "manual" {
				t.Fatalf("message %d: %+v, want %s", i, m, w)
			}
		default:
			t.Fatalf("message %d: %T", i, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(order) != "[/events /kills /events /kills]" {
		t.Errorf("requests in order %v: /kills must follow /events each time", order)
	}
}
