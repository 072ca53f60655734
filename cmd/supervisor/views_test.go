package main

import "github.com/agent-supervisor/supervisor/internal/daemon"

// The daemon's JSON views, as the tests decode them.
type (
	healthView = daemon.HealthView
	agentView  = daemon.AgentView
)

// The daemon's bounds the tests push against.
const (
	eventWriteTimeout = daemon.EventWriteTimeout
	tcpMaxConns       = daemon.TCPMaxConns
	tcpConnsPerIP     = daemon.TCPConnsPerIP
	apiStreamsPerUID  = daemon.APIStreamsPerUID
	apiGroupConns     = daemon.APIGroupConns
	tcpConnRequests   = daemon.TCPConnRequests
	tcpConnLifetime   = daemon.TCPConnLifetime
	sessionsFile      = daemon.SessionsFile
)

var killSeries = daemon.KillSeries

// testPassword is distinctive: it must never appear in any output.
const testPassword = "Pw-n0t-For-Your-Eyes-7731"
