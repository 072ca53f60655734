// Package api serves the daemon's read-only endpoints: /healthz,
// /metrics, /agents, /events and /kills, on the API socket (every endpoint, to
// root and --control-group members, told apart by the kernel's peer
// credentials) and on the TCP listeners (--listen, --metrics-listen:
// /healthz and /metrics only). It owns the JSON views the endpoints serve
// (HealthView, AgentView), which the command-line clients decode, and the
// connection and stream caps that keep a local user from starving the
// daemon (socket.go).
//
// It reads the daemon through what Config hands it (functions and an
// events.Hub) and builds /agents from an AgentSource; it never changes
// state. It may import tracker, resource, events, store (the kill rows
// of /kills), control (the socket and peer credentials) and cgroupinfo;
// nothing of the daemon's assembly.
package api
