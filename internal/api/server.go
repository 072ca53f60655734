package api

import (
	"net/http"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/store"
	"go.uber.org/zap"
)

// Config is what the endpoints serve and where.
type Config struct {
	Log *zap.Logger

	// APISocket is the unix socket serving every endpoint to root and
	// the members of ControlGID ("" disables it); ControlGroup names the
	// group in logs and refusals, ControlGID -1 is root only.
	APISocket    string
	ControlGroup string
	ControlGID   int
	// Listen and MetricsListen are the TCP addresses serving /healthz and
	// /metrics only ("" disables either).
	Listen        string
	MetricsListen string
	// HostID is this host's name, as in /healthz.
	HostID string

	Health  func() HealthView             // /healthz's figures; Status is set here
	Ready   func() bool                   // false: /healthz answers 503 "starting"
	Agents  func(MemberQuery) []AgentView // /agents (see Agents), ?members= (members.go)
	Kills   func() []store.KillRow        // /kills: the last RecentKills kill rows, newest first
	Events  *events.Hub                   // /events
	Metrics http.Handler                  // /metrics
}

// Server serves the read-only endpoints. Its listeners are started by
// ServeAPI and ServeHTTP and stopped through what they return.
type Server struct {
	cfg   Config
	log   *zap.Logger
	state apiState // connections and streams per listener and peer
}

// New returns a server for cfg; nothing listens yet.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, log: cfg.Log}
}
