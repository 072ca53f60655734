package daemon

import (
	"github.com/agent-supervisor/supervisor/internal/config"
	"github.com/agent-supervisor/supervisor/internal/policy/limits"
	"github.com/agent-supervisor/supervisor/internal/policy/pressure"
	"github.com/agent-supervisor/supervisor/internal/resource"
)

// The policies' settings from a configuration: what they are built with
// and what a reload hands them.

func limitSettings(c *config.Config) limits.Settings {
	return limits.Settings{Interval: c.ResourceInterval,
		Limits: resource.Limits{MaxMemory: c.SessionMaxMemory, MaxProcs: c.SessionMaxProcs, Idle: c.SessionIdle}}
}

func pressureSettings(c *config.Config) pressure.Settings {
	return pressure.Settings{Spec: c.Pressure, File: c.PressureFile, MinAge: c.PressureMinAge, Cooldown: c.PressureCooldown}
}

// startPressure starts the memory pressure watch over the resource guard's
// sample and the table (run, once the endpoints listen): an error (no PSI
// here, a window the kernel refuses) stops the daemon before it is ready.
// Called under reloadMu, from the configuration in force: a reload through
// the control socket (already serving) is not lost.
func startPressure(d *daemon) (*pressure.Watch, error) {
	var members []int // what psi.Locate checks: supervisor init's command
	if d.cfg.InitPID > 0 {
		members = []int{d.cfg.InitPID}
	}
	live := d.liveConfig()
	return pressure.Start(pressure.Config{Settings: pressureSettings(live), DryRun: live.DryRun, Members: members,
		Now: d.clock.Now, Log: d.log.Named("pressure"), Registerer: d.metrics.Registerer(),
		Samples: d.res, Table: d.table, Report: d.res, Events: d.events})
}
