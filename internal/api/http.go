package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/store"
	"go.uber.org/zap"
)

// The HTTP endpoints are read-only views for the host's operators: no
// request changes any state. /agents and /events show process names and
// command lines and are served on the API socket only (socket.go); the
// TCP listeners serve /healthz and /metrics, on loopback by default, and
// answer only requests that name this machine (see allowedHost).

// routes are every endpoint: the API socket's.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /agents", s.agents)
	mux.HandleFunc("GET /events", s.serveEvents)
	mux.HandleFunc("GET /kills", s.kills)
	mux.Handle("GET /metrics", s.cfg.Metrics)
	return mux
}

// RecentKills is how many kill rows GET /kills keeps: the last ones, for
// supervisor top's "Last kills" when it starts and its --json.
const RecentKills = 20

func (s *Server) kills(w http.ResponseWriter, r *http.Request) {
	rows := []store.KillRow{}
	if s.cfg.Kills != nil {
		rows = append(rows, s.cfg.Kills()...)
	}
	writeJSON(w, http.StatusOK, rows)
}

// tcpRoutes are the TCP listeners' endpoints: what a probe and a scraper
// need, no process names, no command lines.
func (s *Server) tcpRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", s.cfg.Metrics)
	moved := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 not found: "+r.URL.Path+" is served on the daemon's API socket (--api-socket) to root and --control-group members only; "+
			"use supervisor status or supervisor events", http.StatusNotFound)
	}
	mux.HandleFunc("GET /agents", moved)
	mux.HandleFunc("GET /events", moved)
	mux.HandleFunc("GET /kills", moved)
	return mux
}

// Listener is the endpoints' server, and the handlers in flight: they
// read the deadline thread's state, so run must not free it before every
// handler has returned.
type Listener struct {
	srv      *http.Server // nil when --listen is empty
	addr     string
	inflight sync.WaitGroup
	done     chan struct{}
	metrics  *Listener // --metrics-listen (serveMetricsListen), stopped with this one
}

// serveHTTP serves /healthz and /metrics on listen and on --metrics-listen;
// either address may be empty.
func (s *Server) serveHTTP(listen string) (*Listener, error) {
	h := &Listener{}
	if listen != "" {
		var err error
		if h, err = s.serveTCP(listen, "--listen", &s.state.listenConns); err != nil {
			return nil, err
		}
	}
	m, err := s.serveMetricsListen()
	if err != nil {
		h.Stop()
		return nil, err
	}
	h.metrics = m
	return h, nil
}

// serveTCP listens on listen (the flag's value; flag names it) and serves
// tcpRoutes until stop, within the listener's connection caps (counted in
// conns), timeouts and connection lifetime (socket.go).
func (s *Server) serveTCP(listen, flag string, conns *atomic.Int64) (*Listener, error) {
	tl, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", listen, err)
	}
	addr := tl.Addr().String()
	ln := &limitListener{Listener: tl, n: conns, max: TCPMaxConns, refused: func(remote netip.Addr, perIP bool) {
		if perIP {
			s.state.refusedTCPPerIP.Add(1)
			s.state.warnRefusal(s.log, "http: connection closed: this address has its most connections open on "+flag,
				zap.String("remote", remote.String()), zap.Int("max_per_address", TCPConnsPerIP), zap.String("listen", addr))
			return
		}
		s.state.refusedTCP.Add(1)
		s.state.warnRefusal(s.log, "http: connection closed: "+flag+" has its most connections open",
			zap.Int("max", TCPMaxConns), zap.String("listen", addr))
	}}
	// On loopback every local user connects from the same address: a cap
	// per address would be one more cap on them all.
	if ta, ok := tl.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		ln.perIP = TCPConnsPerIP
	}
	listenHost, _, _ := net.SplitHostPort(listen)
	routes := s.tcpRoutes()
	return s.serveListener(ln, addr, func(w http.ResponseWriter, r *http.Request) {
		if spent(r) {
			w.Header().Set("Connection", "close") // the server closes it after this answer
		}
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !allowedHost(r.Host, listenHost, local) {
			http.Error(w, "forbidden: the Host header must be localhost, a loopback address or the --listen address (DNS rebinding protection)",
				http.StatusForbidden)
			return
		}
		routes.ServeHTTP(w, r)
	}, &http.Server{
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connAgeKey{}, &connAge{start: time.Now()})
		},
		ReadHeaderTimeout: tcpReadHeaderTimeout,
		ReadTimeout:       tcpReadTimeout,
		IdleTimeout:       tcpIdleTimeout,
		WriteTimeout:      httpWriteTimeout,
	}), nil
}

// Stop closes the listener, lets requests in flight finish within a bound,
// then closes what is left and waits until no handler runs.
func (h *Listener) Stop() {
	if h == nil {
		return
	}
	h.metrics.Stop()
	if h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if h.srv.Shutdown(ctx) != nil {
		_ = h.srv.Close() // a handler blocked writing to a slow client now fails
	}
	<-h.done
	h.inflight.Wait()
}

// allowedHost reports whether a request's Host header names this machine:
// localhost, a loopback address, the --listen host, or the address the
// request arrived at. A web page the operator visits can make the browser
// send requests to 127.0.0.1 through a name the page's owner controls (DNS
// rebinding); such a request carries that name, and is refused.
func allowedHost(host, listenHost string, local net.Addr) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	switch {
	case h == "":
		return true // HTTP/1.0 without Host: no browser sends that
	case strings.EqualFold(h, "localhost"), strings.EqualFold(h, listenHost):
		return true
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	if ta, ok := local.(*net.TCPAddr); ok && ta.IP.Equal(ip) {
		return true
	}
	return false
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	h := s.cfg.Health()
	h.Status = "ok"
	if len(h.Degraded) > 0 {
		h.Status = "degraded" // still 200: it reaps
	}
	code := http.StatusOK
	if !s.cfg.Ready() {
		h.Status, code = "starting", http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (s *Server) agents(w http.ResponseWriter, r *http.Request) {
	q, err := ParseMemberQuery(r.URL.Query().Get("members"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Agents(q))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Addr is the address it listens on ("" when nothing listens).
func (h *Listener) Addr() string {
	if h == nil {
		return ""
	}
	return h.addr
}

// ServeHTTP serves /healthz and /metrics on Config.Listen and
// Config.MetricsListen; either may be empty.
func (s *Server) ServeHTTP() (*Listener, error) { return s.serveHTTP(s.cfg.Listen) }

// --metrics-listen is for a Prometheus that is not on this host. --listen
// stays on loopback; a scraper elsewhere cannot reach loopback. Both serve
// the same: /metrics (counters and gauges labelled by reason, signal,
// outcome, event type, memory kind: no process names, no command lines)
// and /healthz (counts and states), so this one can be bound to the node's
// address. /agents and /events are on the API socket only. The Host header
// check, the timeouts and the connection lifetime apply as on --listen; its
// connection cap is its own, so a client holding --listen's slots leaves
// these alone, and on an address that is not loopback one remote address
// holds at most TCPConnsPerIP of them (socket.go).

// serveMetricsListen serves tcpRoutes on --metrics-listen; nil when it is
// empty.
func (s *Server) serveMetricsListen() (*Listener, error) {
	if s.cfg.MetricsListen == "" {
		return nil, nil
	}
	h, err := s.serveTCP(s.cfg.MetricsListen, "--metrics-listen", &s.state.metricsConns)
	if err != nil {
		return nil, err
	}
	s.log.Info("metrics listener: /metrics and /healthz only", zap.String("metrics_listen", h.addr))
	return h, nil
}
