package api

import (
	"go.uber.org/zap"
)

// --metrics-listen is for a Prometheus that is not on this host. --listen
// stays on loopback; a scraper elsewhere cannot reach loopback. Both serve
// the same: /metrics (counters and gauges labelled by reason, signal,
// outcome, event type, memory kind: no process names, no command lines)
// and /healthz (counts and states), so this one can be bound to the node's
// address. /agents and /events are on the API socket only. The Host header
// check, the timeouts and the connection lifetime apply as on --listen; its
// connection cap is its own, so a client holding --listen's slots leaves
// these alone, and on an address that is not loopback one remote address
// holds at most TCPConnsPerIP of them (apisocket.go).

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
