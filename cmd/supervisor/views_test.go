package main

import (
	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/daemon"
	"github.com/agent-supervisor/supervisor/internal/metrics"
)

// The daemon's JSON views, as the tests decode them.
type (
	healthView = api.HealthView
	agentView  = api.AgentView
)

// The daemon's bounds the tests push against.
const (
	eventWriteTimeout = api.EventWriteTimeout
	tcpMaxConns       = api.TCPMaxConns
	tcpConnsPerIP     = api.TCPConnsPerIP
	apiStreamsPerUID  = api.APIStreamsPerUID
	apiGroupConns     = api.APIGroupConns
	tcpConnRequests   = api.TCPConnRequests
	tcpConnLifetime   = api.TCPConnLifetime
	sessionsFile      = daemon.SessionsFile
)

var killSeries = metrics.KillSeries
