package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/store"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The live event stream: the daemon publishes to d.events (an events.Hub)
// from the table's notices, finished kills, snapshots and lost events;
// GET /events streams them as NDJSON; `supervisor events` follows it.

// onNotice publishes what the table reports. The table may hold its lock:
// this only builds an event when a client wants it and publishes it, which
// never blocks.
func (d *daemon) onNotice(n tracker.Notice) {
	var kind events.Type
	switch n.Kind {
	case tracker.NoticeAgent:
		kind = events.TypeAgent
	case tracker.NoticeDeadline:
		kind = events.TypeDeadline
	case tracker.NoticeLeftover:
		kind = events.TypeLeftover
	default:
		return
	}
	if !d.events.Wants(kind) {
		return
	}
	now := d.clock.Now()
	wall := func(boot int64) time.Time { return tracker.Time(boot, now).UTC() }
	switch kind {
	case events.TypeAgent:
		d.events.Publish(&events.Agent{PID: n.PID, Comm: n.Comm, Cmdline: n.Cmdline, Rule: n.Rule,
			StartedAt: wall(n.Start.NS), Deadline: wall(n.Deadline), SessionPID: n.Session.PID, Info: n.Cgroup})
	case events.TypeDeadline:
		d.events.Publish(&events.Deadline{PID: n.PID, Comm: n.Comm, Rule: n.Rule, Reason: string(n.Reason), Cause: n.Cause,
			Previous: wall(n.Previous), Deadline: wall(n.Deadline), SessionPID: n.Session.PID})
	case events.TypeLeftover:
		d.events.Publish(&events.Leftover{PID: n.PID, Comm: n.Comm, Cmdline: n.Cmdline, Rule: n.Rule,
			SessionPID: n.Session.PID, KillAt: wall(n.Deadline), Info: n.Cgroup})
	}
}

// publishKill publishes a finished reap's kill record, as spooled.
func (d *daemon) publishKill(k *store.KillRow) {
	if d.events.Wants(events.TypeKill) {
		d.events.Publish(&events.Kill{KillRow: *k})
	}
}

// publishSnapshot publishes a health row, as spooled.
func (d *daemon) publishSnapshot(row *store.SnapshotRow) {
	if d.events.Wants(events.TypeSnapshot) {
		d.events.Publish(&events.Snapshot{Status: row.Status, Details: row.Details, ActionTaken: row.ActionTaken})
	}
}

// publishLost publishes the events the kernel dropped since the last call.
// The proc connector counts a gap when the next message arrives, which,
// after ENOBUFS, is after the resync. Called from the event loop only.
func (d *daemon) publishLost() {
	total := d.conn.Stats().Lost
	if total <= d.lostSeen {
		return
	}
	n := total - d.lostSeen
	d.lostSeen = total
	d.events.Publish(&events.Lost{Events: n, Total: total})
}

// publishResync publishes a finished rebuild of the table from /proc.
func (d *daemon) publishResync(took time.Duration) {
	if !d.events.Wants(events.TypeResync) {
		return
	}
	st := d.table.Stats()
	d.events.Publish(&events.Resync{TookMS: float64(took) / 1e6, Processes: st.Processes,
		EventsLost: d.conn.Stats().Lost, Resyncs: st.Resyncs})
}

// eventHub exports the stream's client counts.
func (m *metrics) eventHub(h *events.Hub) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "supervisor_event_clients_dropped_total",
			Help: "/events clients dropped because they fell a whole buffer of events behind.",
		}, func() float64 { return float64(h.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "supervisor_event_clients_refused_total",
			Help: "/events clients refused (503) because the most allowed were connected.",
		}, func() float64 { return float64(h.Refused()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "supervisor_event_clients",
			Help: "/events clients connected.",
		}, func() float64 { return float64(h.Clients()) }),
	)
}

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
func (d *daemon) serveEvents(w http.ResponseWriter, r *http.Request) {
	types, err := events.ParseTypes(r.URL.Query().Get("types"))
	if err != nil {
		http.Error(w, "types: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Per peer: a --control-group member has a few streams, root has
	// slots no one else can take (apisocket.go).
	if pc := requestPeer(r); pc != nil {
		release := d.api.stream(pc.peer.UID)
		if release == nil {
			d.api.warnRefusal(d.log, "event client refused: its uid has its most /events streams open",
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
	sub, err := d.events.Subscribe(types)
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
	log := d.log.With(zap.Stringer("types", types))
	if pc := requestPeer(r); pc != nil {
		log = log.With(zap.Uint32("uid", pc.peer.UID), zap.Int32("peer_pid", pc.peer.PID))
	}
	log.Debug("event client connected", zap.Int("clients", d.events.Clients()))
	err = events.Stream(r.Context(), sub, deadlineWriter{w, rc}, rc.Flush)
	switch {
	case errors.Is(err, events.ErrDropped):
		log.Warn("event client dropped as too slow: a whole buffer of events behind, or a write stuck",
			zap.Int("buffer", d.events.Buffer()), zap.Duration("write_timeout", EventWriteTimeout))
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

// eventsCmd follows the daemon's /events (on its API socket) in a
// terminal: one line per event, or the raw JSON lines with --json, until
// interrupted or the stream ends.
func eventsCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := config.NewFlagSet("events")
	af := addAPIFlags(fs)
	asJSON := config.Bool(fs, "json")
	typeList := config.String(fs, "types")
	if code, done := config.ParseFlags(fs, args, stdout, stderr); done {
		return code
	}
	path := af.resolve(fs, "events", getenv, stderr)
	if fs.NArg() > 0 || path == "" {
		fmt.Fprintf(stderr, "supervisor: events: want %s and no arguments\n", apiUsage)
		return 2
	}
	types, err := events.ParseTypes(*typeList)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: events: --types: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	u := apiURL("/events")
	if types != events.All {
		u += "?types=" + url.QueryEscape(types.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: events: %v\n", err)
		return 2
	}
	// No overall timeout: the stream lasts. Connecting and the first
	// answer are bounded.
	resp, err := apiHTTP(path, 0).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintln(stderr, apiError("events", path, err))
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "supervisor: events: %s answered %v\n", path, statusError(resp))
		return 1
	}
	out := bufio.NewWriter(stdout)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // a kill record lists every descendant
	for sc.Scan() {
		if *asJSON {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
		} else {
			out.WriteString(formatEvent(sc.Bytes()))
			out.WriteByte('\n')
		}
		if err := out.Flush(); err != nil {
			return 1 // stdout closed (a pipe to head): nothing to say it on
		}
	}
	if ctx.Err() != nil {
		return 0
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "supervisor: events: reading the stream from %s: %v\n", path, err)
		return 1
	}
	fmt.Fprintf(stderr, "supervisor: events: the daemon at %s ended the stream (it is stopping, or this client fell too far behind and was dropped)\n", path)
	return 1
}

// wireEvent is any event as it arrives, for formatEvent: the union of the
// types' fields.
type wireEvent struct {
	Type        string     `json:"type"`
	Time        time.Time  `json:"time"`
	PID         int32      `json:"pid"`
	Comm        string     `json:"comm"`
	Rule        string     `json:"rule"`
	Reason      string     `json:"reason"`
	Cause       string     `json:"cause"`
	Deadline    time.Time  `json:"deadline"`
	Previous    time.Time  `json:"previous"`
	KillAt      time.Time  `json:"kill_at"`
	SessionPID  *int32     `json:"session_pid"`
	LatenessMS  float64    `json:"lateness_ms"`
	FinalSignal string     `json:"final_signal"`
	Outcome     string     `json:"outcome"`
	Descendants []int32    `json:"descendants"`
	DryRun      bool       `json:"dry_run"`
	ExitedAt    *time.Time `json:"exited_at"`
	Status      string     `json:"status"`
	ActionTaken *string    `json:"action_taken"`
	TookMS      float64    `json:"took_ms"`
	Processes   int        `json:"processes"`
	LostTotal   uint64     `json:"events_lost_total"`
	Events      uint64     `json:"events"`
	Total       uint64     `json:"total"`
	Resource    string     `json:"resource"`
	SomeAvg10   float64    `json:"some_avg10"`
	FullAvg10   float64    `json:"full_avg10"`
}

// formatEvent is one readable line for an event: its local time, its type
// and its key fields. A line it cannot read is shown as it came.
func formatEvent(line []byte) string {
	var e wireEvent
	if err := json.Unmarshal(line, &e); err != nil || e.Type == "" {
		return printable(string(line))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-8s", e.Time.Local().Format("15:04:05.000"), e.Type)
	kv := func(k string, v any) { fmt.Fprintf(&b, " %s=%v", k, v) }
	session := func() {
		if e.SessionPID != nil && *e.SessionPID != 0 && *e.SessionPID != e.PID {
			kv("session", *e.SessionPID)
		}
	}
	at := func(t time.Time) string {
		d := time.Until(t).Round(time.Second)
		if d >= 0 {
			return t.Local().Format("15:04:05") + " (in " + d.String() + ")"
		}
		return t.Local().Format("15:04:05") + " (" + (-d).String() + " ago)"
	}
	switch e.Type {
	case "agent":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("rule", e.Rule)
		kv("deadline", at(e.Deadline))
		session()
	case "deadline":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("deadline", at(e.Deadline))
		kv("was", e.Previous.Local().Format("15:04:05"))
		kv("by", e.Cause)
		if e.Reason != string(tracker.ReasonMaxAge) {
			kv("reason", e.Reason)
		}
	case "leftover":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		session()
		kv("kill_at", at(e.KillAt))
	case "kill":
		kv("pid", e.PID)
		kv("comm", e.Comm)
		kv("reason", e.Reason)
		kv("outcome", e.Outcome)
		if e.FinalSignal != "" {
			kv("signal", e.FinalSignal)
		}
		kv("late", fmt.Sprintf("%.1fms", e.LatenessMS))
		kv("descendants", len(e.Descendants))
		session()
		if e.DryRun {
			b.WriteString(" dry-run")
		}
	case "snapshot":
		kv("status", e.Status)
		if e.ActionTaken != nil {
			kv("action", fmt.Sprintf("%q", *e.ActionTaken))
		}
	case "resync":
		kv("took", fmt.Sprintf("%.1fms", e.TookMS))
		kv("processes", e.Processes)
		kv("lost_total", e.LostTotal)
	case "lost":
		kv("events", e.Events)
		kv("total", e.Total)
	case "pressure":
		kv("resource", e.Resource)
		kv("some_avg10", e.SomeAvg10)
		kv("full_avg10", e.FullAvg10)
		session()
	default:
		return printable(string(line))
	}
	return printable(b.String())
}
