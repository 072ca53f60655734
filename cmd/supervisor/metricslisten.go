package main

import (
	"net/http"

	"go.uber.org/zap"
)

// --metrics-listen is for a Prometheus that is not on this host. The main
// listener stays on loopback because /agents and /events show process names
// and command lines (which can hold secrets); a scraper elsewhere, though,
// cannot reach loopback. This second listener serves only what a scraper and
// a kubelet probe need — /metrics (counters and gauges labelled by reason,
// signal, outcome, event type, memory kind: no process names, no command
// lines) and /healthz (counts and states) — so it can be bound to the
// node's address. The Host header check applies as on --listen.

// metricsRoutes are the endpoints of --metrics-listen.
func (d *daemon) metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.Handle("GET /metrics", d.metrics.handler())
	return mux
}

// serveMetricsListen serves metricsRoutes on --metrics-listen; nil when it
// is empty.
func (d *daemon) serveMetricsListen() (*httpServer, error) {
	if d.cfg.MetricsListen == "" {
		return nil, nil
	}
	h, err := d.serveOn(d.cfg.MetricsListen, d.metricsRoutes(), false)
	if err != nil {
		return nil, err
	}
	d.log.Info("metrics listener: /metrics and /healthz only", zap.String("metrics_listen", h.addr))
	return h, nil
}
