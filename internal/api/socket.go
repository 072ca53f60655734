package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/control"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The endpoints and who may reach them. /agents and /events show every
// user's command lines, cgroups and container IDs, so they are served on a
// unix socket beside the control socket (--api-socket), to root and the
// members of --control-group, as the control socket is: the file's mode is
// one fence, the peer's credentials (SO_PEERCRED, taken by the kernel at
// connect) the other. The TCP listeners (--listen, --metrics-listen) serve
// /healthz and /metrics only — counts and states, no process names — for
// the kubelet's probes and Prometheus.
//
// Nothing a local user does to either may starve the daemon. Every
// connection costs a descriptor, and the descriptors are what kills need:
// of RLIMIT_NOFILE L, the pidfds taken when an agent is found and the
// resource sampler's held statm descriptors use numbers below L/2 (each
// checks the number it got), and the reaper pins a due agent's tree with
// numbers up to L - max(64, L/8) (reap.Pins). Connections take the lowest
// free numbers like anything else, so all of them together must fit in the
// space between: at the smallest limit the daemon is meant for, L = 512,
// that is 448 - 256 = 192, with the daemon's own few descriptors (netlink,
// epoll, spool, log, listeners) in it too. So the connections are capped
// at 148 in all, the control socket's 16 included (below), whatever the
// limit, which leaves a due tree at least 40 descriptors above them at
// L = 512 (with the reserve untouched) and thousands at the usual limits.
// Past a cap a connection is accepted and closed at once, which holds no
// descriptor, and the idle and read timeouts free what a silent client
// holds. No one but root can take root's connections or /events streams,
// and no one without access takes any from the permitted peers.
//
// The TCP listeners are anyone's: a client that sends a request just
// before each idle timeout holds its connection as long as it likes, and
// enough of them hold every slot of a listener. So each listener has its
// own cap (holding --listen's leaves --metrics-listen's alone), one remote
// address holds at most a few of a listener that is not on loopback (one
// pod cannot take the node's metrics listener; on loopback every local
// user has the same address), and a connection is closed after a bounded
// number of requests or time, when its slot goes back to whoever connects
// next. Nothing that matters waits on them: the probes go over the API
// socket (supervisor health), where root has slots of its own.
const (
	// TCPMaxConns: each TCP listener's, --listen's and --metrics-listen's
	// (together the 64 of the budget above). A probe or a scrape takes
	// one for a few milliseconds.
	TCPMaxConns = 32
	// TCPConnsPerIP: one remote address's, on a listener bound to an
	// address that is not loopback (the node's, 0.0.0.0).
	TCPConnsPerIP = 8
	// TCPConnRequests and TCPConnLifetime: a keep-alive connection is
	// closed after its answer once it has served this many requests or is
	// this old.
	TCPConnRequests = 100
	TCPConnLifetime = 30 * time.Second
	// apiRootConns: root's connections to the API socket, which no other
	// peer can use.
	apiRootConns = 32
	// APIGroupConns: the --control-group members' together, at most
	// apiConnsPerUID each.
	APIGroupConns  = 32
	apiConnsPerUID = 8
	// apiForbiddenConns: peers that are neither (possible only if the
	// socket's mode was loosened): each is answered 403 and closed.
	apiForbiddenConns = 4
	// (The control socket takes up to 16 more: control.maxConns.)

	// APIStreamsPerUID bounds a --control-group member's /events streams,
	// and apiRootStreams of the hub's events.MaxSubscribers are root's
	// alone: however many the members open, root gets its stream.
	APIStreamsPerUID = 4
	apiRootStreams   = 8

	tcpReadHeaderTimeout = 2 * time.Second
	tcpReadTimeout       = 5 * time.Second
	tcpIdleTimeout       = 5 * time.Second
	apiReadHeaderTimeout = 5 * time.Second
	apiIdleTimeout       = 30 * time.Second
	httpWriteTimeout     = 10 * time.Second // a stuck client cannot hold a handler for long
)

// apiState is the endpoints' accounting: connections per listener and per
// peer, /events streams per peer, and what was refused. The zero value is
// ready.
type apiState struct {
	listenConns  atomic.Int64 // --listen
	metricsConns atomic.Int64 // --metrics-listen

	mu         sync.Mutex
	rootConns  int
	groupConns int
	forbidden  int
	uidConns   map[uint32]int
	uidStreams map[uint32]int
	streams    int // non-root streams

	refusedTCP       atomic.Uint64 // past a TCP listener's TCPMaxConns
	refusedTCPPerIP  atomic.Uint64 // past TCPConnsPerIP
	refusedConns     atomic.Uint64 // API socket, past a peer's cap
	refusedForbidden atomic.Uint64 // API socket, neither root nor a member
	refusedStreams   atomic.Uint64 // /events, past a peer's stream cap

	warned atomic.Int64 // unix ns of the last refusal warning
}

// warnRefusal logs a refusal at warn at most every 10 s: a flood of them
// is one line, counted in the metrics.
func (a *apiState) warnRefusal(log *zap.Logger, msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := a.warned.Load()
	if now-last < int64(10*time.Second) || !a.warned.CompareAndSwap(last, now) {
		log.Debug(msg, fields...)
		return
	}
	log.Warn(msg+" (further refusals within 10 s are logged at debug)", fields...)
}

// limitListener accepts at most max connections at once on l, counted in
// n, and at most perIP from one remote address (perIP 0: no such cap);
// past either it accepts and closes at once, and calls refused.
type limitListener struct {
	net.Listener
	n       *atomic.Int64
	max     int64
	perIP   int
	refused func(remote netip.Addr, perIP bool)

	mu   sync.Mutex
	byIP map[netip.Addr]int // at most max entries, none at 0
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		release, perIP := l.admit(ip)
		if release == nil {
			c.Close()
			l.refused(ip, perIP)
			continue
		}
		return &releaseConn{Conn: c, release: release}, nil
	}
}

// admit takes a slot for a connection from ip, or returns nil and whether
// the per-address cap was the one in the way.
func (l *limitListener) admit(ip netip.Addr) (release func(), perIP bool) {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return nil, false
	}
	if l.perIP <= 0 {
		return func() { l.n.Add(-1) }, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[ip] >= l.perIP {
		l.n.Add(-1)
		return nil, true
	}
	if l.byIP == nil {
		l.byIP = map[netip.Addr]int{}
	}
	l.byIP[ip]++
	return func() {
		l.mu.Lock()
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
		l.mu.Unlock()
		l.n.Add(-1)
	}, false
}

// remoteIP is a TCP peer's address, IPv4 in IPv6 as IPv4 (a dual-stack
// listener sees both).
func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// connAge is a TCP connection's start and how many requests it has served
// (TCPConnRequests, TCPConnLifetime). Go's server runs one HTTP/1
// connection's requests one after another, but the count is atomic anyway.
type connAge struct {
	start    time.Time
	requests atomic.Int64
}

type connAgeKey struct{}

// spent counts r on its connection and reports whether the connection has
// served its share and should be closed after this answer.
func spent(r *http.Request) bool {
	ca, _ := r.Context().Value(connAgeKey{}).(*connAge)
	if ca == nil {
		return false
	}
	return ca.requests.Add(1) >= TCPConnRequests || time.Since(ca.start) >= TCPConnLifetime
}

// releaseConn gives its slot back when closed, once.
type releaseConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releaseConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// peerConn is a connection to the API socket and who made it.
type peerConn struct {
	releaseConn // a *net.UnixConn
	peer        control.Peer
	authorized  bool
}

// unix is the connection itself, for the socket options.
func (c *peerConn) unix() *net.UnixConn { return c.Conn.(*net.UnixConn) }

// peerKey is the context key of a request's peerConn (API socket only).
type peerKey struct{}

// requestPeer is who made r, on the API socket; nil on TCP.
func requestPeer(r *http.Request) *peerConn {
	c, _ := r.Context().Value(peerKey{}).(*peerConn)
	return c
}

// peerListener accepts on the API socket within the per-peer caps.
type peerListener struct {
	sock  *control.Socket
	group int
	api   *apiState
	log   *zap.Logger
}

func (l *peerListener) Addr() net.Addr { return l.sock.Addr() }
func (l *peerListener) Close() error   { return l.sock.Close() }

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.sock.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p, err := control.PeerOf(c)
		if err != nil {
			l.api.refusedForbidden.Add(1)
			l.log.Error("api socket: cannot read the peer's credentials; connection closed", zap.Error(err))
			c.Close()
			continue
		}
		ok := control.Authorized(p, l.group)
		release, why := l.api.admit(p.UID, ok)
		if release == nil {
			l.api.warnRefusal(l.log, "api socket: connection closed: "+why,
				zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID))
			c.Close()
			continue
		}
		return &peerConn{releaseConn: releaseConn{Conn: c, release: release}, peer: p, authorized: ok}, nil
	}
}

// admit takes a connection slot for a peer of uid (authorized: root or a
// member of the group), or says why not. release may be called more than
// once.
func (a *apiState) admit(uid uint32, authorized bool) (release func(), why string) {
	release, why = a.admitSlot(uid, authorized)
	if release != nil {
		release = sync.OnceFunc(release)
	}
	return release, why
}

func (a *apiState) admitSlot(uid uint32, authorized bool) (release func(), why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !authorized:
		if a.forbidden >= apiForbiddenConns {
			a.refusedForbidden.Add(1)
			return nil, "too many connections from peers without access"
		}
		a.forbidden++
		return func() { a.mu.Lock(); a.forbidden--; a.mu.Unlock() }, ""
	case uid == 0:
		if a.rootConns >= apiRootConns {
			a.refusedConns.Add(1)
			return nil, fmt.Sprintf("root has %d connections open", apiRootConns)
		}
		a.rootConns++
		return func() { a.mu.Lock(); a.rootConns--; a.mu.Unlock() }, ""
	}
	if a.uidConns == nil {
		a.uidConns = map[uint32]int{}
	}
	switch {
	case a.uidConns[uid] >= apiConnsPerUID:
		a.refusedConns.Add(1)
		return nil, fmt.Sprintf("this uid has %d connections open", apiConnsPerUID)
	case a.groupConns >= APIGroupConns:
		a.refusedConns.Add(1)
		return nil, fmt.Sprintf("the control group's members have %d connections open", APIGroupConns)
	}
	a.uidConns[uid]++
	a.groupConns++
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.groupConns--
		if a.uidConns[uid]--; a.uidConns[uid] <= 0 {
			delete(a.uidConns, uid)
		}
	}, ""
}

// stream takes an /events stream slot for a peer of uid, or returns nil.
// Root's are bounded by the hub alone.
func (a *apiState) stream(uid uint32) (release func()) {
	if uid == 0 {
		return func() {}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.uidStreams == nil {
		a.uidStreams = map[uint32]int{}
	}
	if a.uidStreams[uid] >= APIStreamsPerUID || a.streams >= events.MaxSubscribers-apiRootStreams {
		a.refusedStreams.Add(1)
		return nil
	}
	a.uidStreams[uid]++
	a.streams++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.streams--
			if a.uidStreams[uid]--; a.uidStreams[uid] <= 0 {
				delete(a.uidStreams, uid)
			}
		})
	}
}

// serveAPI serves every endpoint on --api-socket (nil when it is empty).
func (s *Server) serveAPI() (*Listener, error) {
	path := s.cfg.APISocket
	if path == "" {
		return nil, nil
	}
	sock, err := control.ListenSocket(path, s.cfg.ControlGID)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	log := s.log.Named("api")
	ln := &peerListener{sock: sock, group: s.cfg.ControlGID, api: &s.state, log: log}
	routes := s.routes()
	forbidden := "forbidden: the API socket is for root"
	if s.cfg.ControlGID >= 0 {
		forbidden += fmt.Sprintf(" and members of the daemon's --control-group (gid %d)", s.cfg.ControlGID)
	}
	h := s.serveListener(ln, path, func(w http.ResponseWriter, r *http.Request) {
		if pc := requestPeer(r); pc == nil || !pc.authorized {
			uid := uint32(1<<32 - 1)
			if pc != nil {
				uid = pc.peer.UID
			}
			s.state.warnRefusal(log, "api socket: request refused: not root nor a member of the control group",
				zap.Uint32("uid", uid), zap.String("path", r.URL.Path))
			w.Header().Set("Connection", "close")
			http.Error(w, fmt.Sprintf("%s (you are uid %d)", forbidden, uid), http.StatusForbidden)
			return
		}
		routes.ServeHTTP(w, r)
	}, &http.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, c)
		},
		ReadHeaderTimeout: apiReadHeaderTimeout,
		IdleTimeout:       apiIdleTimeout,
		WriteTimeout:      httpWriteTimeout, // /events sets a deadline per write instead
	})
	log.Info("api socket: /agents, /events, /healthz, /metrics", zap.String("path", path),
		zap.String("group", s.cfg.ControlGroup))
	return h, nil
}

// serveListener serves handler on ln with srv's settings until stop; addr
// names it.
func (s *Server) serveListener(ln net.Listener, addr string, handler http.HandlerFunc, srv *http.Server) *Listener {
	h := &Listener{addr: addr, done: make(chan struct{}), srv: srv}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.inflight.Add(1)
		defer h.inflight.Done()
		handler(w, r)
	})
	if l, err := zap.NewStdLogAt(s.log.Named("http"), zap.WarnLevel); err == nil {
		srv.ErrorLog = l
	}
	go func() {
		defer close(h.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", zap.String("addr", addr), zap.Error(err))
		}
	}()
	return h
}

// apiCollector exports the endpoints' accounting.
type apiCollector struct{ a *apiState }

var (
	descHTTPConns   = prometheus.NewDesc("supervisor_http_connections", "Connections open to the endpoints: listen (--listen), metrics_listen (--metrics-listen) or api (--api-socket).", []string{"listener"}, nil)
	descHTTPRefused = prometheus.NewDesc("supervisor_http_refused_total",
		"Connections and streams refused: tcp_connections (past a TCP listener's cap), tcp_per_ip (past one remote address's cap on a TCP listener not on loopback), api_connections (past a peer's cap on the API socket), api_forbidden (a peer neither root nor in --control-group), api_streams (past a peer's /events stream cap).",
		[]string{"reason"}, nil)
)

func (c apiCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHTTPConns
	ch <- descHTTPRefused
}

func (c apiCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	api := a.rootConns + a.groupConns + a.forbidden
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descHTTPConns, prometheus.GaugeValue, float64(a.listenConns.Load()), "listen")
	ch <- prometheus.MustNewConstMetric(descHTTPConns, prometheus.GaugeValue, float64(a.metricsConns.Load()), "metrics_listen")
	ch <- prometheus.MustNewConstMetric(descHTTPConns, prometheus.GaugeValue, float64(api), "api")
	for _, r := range []struct {
		reason string
		n      *atomic.Uint64
	}{{"tcp_connections", &a.refusedTCP}, {"tcp_per_ip", &a.refusedTCPPerIP}, {"api_connections", &a.refusedConns},
		{"api_forbidden", &a.refusedForbidden}, {"api_streams", &a.refusedStreams}} {
		ch <- prometheus.MustNewConstMetric(descHTTPRefused, prometheus.CounterValue, float64(r.n.Load()), r.reason)
	}
}

// Collector exports the endpoints' connection counts and refusals.
func (s *Server) Collector() prometheus.Collector { return apiCollector{&s.state} }

// ServeAPI serves every endpoint on Config.APISocket; nil when it is empty.
func (s *Server) ServeAPI() (*Listener, error) { return s.serveAPI() }

// serveEvents streams events as NDJSON until the client goes away, falls
// too far behind, or the daemon stops. ?types=kill,leftover filters.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	types, err := events.ParseTypes(r.URL.Query().Get("types"))
	if err != nil {
		http.Error(w, "types: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Per peer: a --control-group member has a few streams, root has
	// slots no one else can take (socket.go).
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
		_ = pc.unix().SetWriteBuffer(eventSndbuf)
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
