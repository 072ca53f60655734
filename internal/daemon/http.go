package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// The HTTP endpoints are read-only views for the host's operators: no
// request changes any state. /agents and /events show process names and
// command lines and are served on the API socket only (apisocket.go); the
// TCP listeners serve /healthz and /metrics, on loopback by default, and
// answer only requests that name this machine (see allowedHost).

// routes are every endpoint: the API socket's.
func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.HandleFunc("GET /agents", d.agents)
	mux.HandleFunc("GET /events", d.serveEvents)
	mux.Handle("GET /metrics", d.metrics.handler())
	return mux
}

// tcpRoutes are the TCP listeners' endpoints: what a probe and a scraper
// need, no process names, no command lines.
func (d *daemon) tcpRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.Handle("GET /metrics", d.metrics.handler())
	moved := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 not found: "+r.URL.Path+" is served on the daemon's API socket (--api-socket) to root and --control-group members only; "+
			"use supervisor status or supervisor events", http.StatusNotFound)
	}
	mux.HandleFunc("GET /agents", moved)
	mux.HandleFunc("GET /events", moved)
	return mux
}

// httpServer is the endpoints' server, and the handlers in flight: they
// read the deadline thread's state, so run must not free it before every
// handler has returned.
type httpServer struct {
	srv      *http.Server // nil when --listen is empty
	addr     string
	inflight sync.WaitGroup
	done     chan struct{}
	metrics  *httpServer // --metrics-listen (metricslisten.go), stopped with this one
}

// serveHTTP serves /healthz and /metrics on listen and on --metrics-listen;
// either address may be empty.
func (d *daemon) serveHTTP(listen string) (*httpServer, error) {
	h := &httpServer{}
	if listen != "" {
		var err error
		if h, err = d.serveTCP(listen, "--listen", &d.api.listenConns); err != nil {
			return nil, err
		}
	}
	m, err := d.serveMetricsListen()
	if err != nil {
		h.stop()
		return nil, err
	}
	h.metrics = m
	return h, nil
}

// serveTCP listens on listen (the flag's value; flag names it) and serves
// tcpRoutes until stop, within the listener's connection caps (counted in
// conns), timeouts and connection lifetime (apisocket.go).
func (d *daemon) serveTCP(listen, flag string, conns *atomic.Int64) (*httpServer, error) {
	tl, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", listen, err)
	}
	addr := tl.Addr().String()
	ln := &limitListener{Listener: tl, n: conns, max: TCPMaxConns, refused: func(remote netip.Addr, perIP bool) {
		if perIP {
			d.api.refusedTCPPerIP.Add(1)
			d.api.warnRefusal(d.log, "http: connection closed: this address has its most connections open on "+flag,
				zap.String("remote", remote.String()), zap.Int("max_per_address", TCPConnsPerIP), zap.String("listen", addr))
			return
		}
		d.api.refusedTCP.Add(1)
		d.api.warnRefusal(d.log, "http: connection closed: "+flag+" has its most connections open",
			zap.Int("max", TCPMaxConns), zap.String("listen", addr))
	}}
	// On loopback every local user connects from the same address: a cap
	// per address would be one more cap on them all.
	if ta, ok := tl.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		ln.perIP = TCPConnsPerIP
	}
	listenHost, _, _ := net.SplitHostPort(listen)
	routes := d.tcpRoutes()
	return d.serveListener(ln, addr, func(w http.ResponseWriter, r *http.Request) {
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

// stop closes the listener, lets requests in flight finish within a bound,
// then closes what is left and waits until no handler runs.
func (h *httpServer) stop() {
	if h == nil {
		return
	}
	h.metrics.stop()
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

// eventTypes name tracker.Counters.Events, in order.
var eventTypes = []string{"fork", "exec", "comm", "exit", "other"}

type HealthView struct {
	Status     string            `json:"status"`
	Source     string            `json:"source"`
	Processes  int               `json:"processes"`
	Agents     int               `json:"agents"`
	Sessions   int               `json:"sessions"`
	Members    int               `json:"session_members"`
	Leftovers  int               `json:"leftovers_pending"`
	Events     uint64            `json:"events"`
	ByType     map[string]uint64 `json:"events_by_type"`
	EventsLost uint64            `json:"events_lost"`
	Overruns   uint64            `json:"overruns"`
	Resyncs    uint64            `json:"resyncs"`
	BadMsgs    uint64            `json:"bad_messages"`
	Forged     uint64            `json:"forged"`
	Rcvbuf     int               `json:"rcvbuf,omitempty"`
	Realtime   bool              `json:"realtime_timer"`
	DryRun     bool              `json:"dry_run"`
	Database   string            `json:"database"` // "none", "up" or "down"
	SpoolRows  int               `json:"spool_rows"`
	Dropped    uint64            `json:"spool_dropped"`
	SpoolBad   uint64            `json:"spool_bad"`
	InFlight   int64             `json:"kills_in_flight"`
	Retrying   int               `json:"kills_retrying"`
	Host       string            `json:"host"`
	LastSnap   string            `json:"last_snapshot,omitempty"`
	Rate       float64           `json:"events_per_second"`
	MaxAge     string            `json:"max_age"`
}

func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	st := d.table.Stats()
	h := HealthView{Status: "ok", Source: d.source, Processes: st.Processes, Agents: st.Agents,
		Sessions: st.Sessions, Members: st.SessionMembers, Leftovers: st.Leftovers,
		Resyncs: st.Resyncs, Realtime: d.timer.RT(), DryRun: d.cfg.DryRun, Database: "none",
		SpoolRows: d.store.Spool().Len(), Dropped: d.store.Spool().Dropped(), SpoolBad: d.store.Spool().Bad(),
		InFlight: d.reaper.Stats().InFlight, Retrying: d.table.Queue().Retrying(), Host: d.cfg.HostID,
		Rate: math.Float64frombits(d.rate.Load()), MaxAge: d.table.MaxAge().String()}
	switch {
	case d.store.Up():
		h.Database = "up"
	case d.store.HasDatabase():
		h.Database = "down"
	}
	d.mu.Lock()
	if !d.lastSnapshot.IsZero() {
		h.LastSnap = d.lastSnapshot.UTC().Format(time.RFC3339Nano)
	}
	d.mu.Unlock()
	h.ByType = map[string]uint64{}
	for i, n := range st.Events {
		h.Events += n
		h.ByType[eventTypes[i]] = n
	}
	if d.conn != nil {
		cs := d.conn.Stats()
		h.EventsLost, h.Overruns, h.BadMsgs, h.Rcvbuf = cs.Lost, cs.Overruns, cs.Bad, d.conn.ReadBuffer()
		h.Forged = cs.Forged
	}
	code := http.StatusOK
	if !d.ready.Load() {
		h.Status, code = "starting", http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

// AgentView is one entry of /agents: an agent waiting for its max age (with
// its session's member count), or a session whose agent has exited, with
// its leftovers and when each will be killed (Deadline is the first), or a
// process whose kill failed and is tried again ("state": "retrying", for
// any reason: Deadline is when it was first due, NextAttempt when it is
// tried again).
type AgentView struct {
	PID         int32          `json:"pid"`
	Comm        string         `json:"comm"`
	Cmdline     string         `json:"cmdline"`
	StartedAt   time.Time      `json:"started_at"`
	Deadline    time.Time      `json:"deadline"`
	SecondsLeft float64        `json:"seconds_left"`
	Rule        string         `json:"rule"`
	Reason      string         `json:"reason"`
	SessionPID  int32          `json:"session_pid,omitempty"`
	Members     int            `json:"members,omitempty"` // the session's live members, when this agent heads one
	ExitedAt    *time.Time     `json:"exited_at,omitempty"`
	Leftovers   []LeftoverView `json:"leftovers,omitempty"`
	// State is "retrying" for a process whose kill failed (retry.go in
	// the tracker); Attempt is the retry's number (1 for the first),
	// NextAttempt when it comes.
	State       string     `json:"state,omitempty"`
	Attempt     int        `json:"attempt,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	// cgroup, container_id, pod_uid: where it runs, where known.
	cgroupinfo.Info
	// The session's resource figures at the latest sample, on the entry
	// that heads a session (resources.go); absent before the first sample.
	*SessionFigures

	session tracker.SessionID // the session this entry heads or belongs to
}

type LeftoverView struct {
	PID         int32     `json:"pid"`
	Comm        string    `json:"comm"`
	StartedAt   time.Time `json:"started_at"` // for PID@START (control.go)
	KillAt      time.Time `json:"kill_at"`
	SecondsLeft float64   `json:"seconds_left"`
	cgroupinfo.Info
}

func (d *daemon) agents(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, d.agentViews())
}

// stateRetrying is the /agents state of a process whose kill failed and
// is tried again.
const stateRetrying = "retrying"

func (d *daemon) agentViews() []AgentView {
	now := d.clock.Now()
	queue := d.table.Queue().Snapshot()
	retrying := map[int32]bool{}
	for _, a := range queue {
		if a.Attempt > 0 {
			retrying[a.PID] = true
		}
	}
	sessions := d.table.Sessions()
	heads := make(map[tracker.SessionID]int, len(sessions))
	out := make([]AgentView, 0, len(sessions))
	for _, s := range sessions {
		heads[s.ID] = s.Members
		// A leftover whose kill failed has an entry of its own.
		s.Leftovers = slices.DeleteFunc(s.Leftovers, func(l tracker.LeftoverView) bool { return retrying[l.PID] })
		if s.AgentAlive || len(s.Leftovers) == 0 {
			continue
		}
		sort.Slice(s.Leftovers, func(i, j int) bool { return s.Leftovers[i].KillAt < s.Leftovers[j].KillAt })
		exited := tracker.Time(s.ExitedAt, now)
		v := AgentView{PID: s.ID.PID, Comm: s.Comm, Rule: s.Rule, Reason: string(tracker.ReasonLeftover),
			SessionPID: s.ID.PID, Members: s.Members, StartedAt: tracker.Time(s.ID.Start.NS, now), ExitedAt: &exited,
			Deadline: tracker.Time(s.Leftovers[0].KillAt, now), SecondsLeft: float64(s.Leftovers[0].KillAt-now) / 1e9,
			Info: s.Cgroup, session: s.ID}
		for _, l := range s.Leftovers {
			v.Leftovers = append(v.Leftovers, LeftoverView{PID: l.PID, Comm: l.Comm, StartedAt: tracker.Time(l.Start.NS, now),
				KillAt: tracker.Time(l.KillAt, now), SecondsLeft: float64(l.KillAt-now) / 1e9, Info: l.Cgroup})
		}
		out = append(out, v)
	}
	for _, a := range queue {
		if a.Reason != tracker.ReasonMaxAge && a.Attempt == 0 {
			continue
		}
		v := AgentView{
			PID: a.PID, Comm: a.Comm, Cmdline: a.Cmdline, Rule: a.Rule, Reason: string(a.Reason),
			SessionPID:  a.Session.PID,
			StartedAt:   tracker.Time(a.Start.NS, now),
			Deadline:    tracker.Time(a.Deadline, now),
			SecondsLeft: float64(a.Deadline-now) / 1e9,
			Info:        a.Cgroup,
			session:     a.Session,
		}
		if a.Session.PID == a.PID {
			v.Members = heads[a.Session]
		}
		if a.Attempt > 0 {
			next := v.Deadline
			v.State, v.Attempt, v.NextAttempt = stateRetrying, a.Attempt, &next
			v.Deadline = tracker.Time(a.FirstDeadline, now)
			v.SecondsLeft = float64(a.FirstDeadline-now) / 1e9
		}
		out = append(out, v)
	}
	out = d.addFigures(out, sessions, now)
	sort.SliceStable(out, func(i, j int) bool { // entries with no deadline (exempt...) last
		a, b := out[i].Deadline, out[j].Deadline
		if a.IsZero() || b.IsZero() {
			return !a.IsZero() && b.IsZero()
		}
		return a.Before(b)
	})
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
