package tracker

// Reason says why a process is killed. It is one small vocabulary shared by
// every policy, the kill record (tel.agent_kills.reason), the log line and
// the metrics (supervisor_kills_total{reason}).
type Reason string

// The reasons. Policies added later (resources, control) use the rest.
const (
	ReasonMaxAge   Reason = "max_age"  // an agent reached start + max age
	ReasonLeftover Reason = "leftover" // a session member outlived its agent by the leftover grace
	ReasonMemory   Reason = "memory"   // a session's memory crossed its limit
	ReasonProcs    Reason = "procs"    // a session's process count crossed its limit
	ReasonIdle     Reason = "idle"     // no member of a session used CPU for the idle limit
	ReasonPressure Reason = "pressure" // the kernel reported memory pressure and this session was to blame
	ReasonManual   Reason = "manual"   // an operator asked for it
)

// Reasons lists every reason, for metrics that exist from the start.
var Reasons = []Reason{ReasonMaxAge, ReasonLeftover, ReasonMemory, ReasonProcs, ReasonIdle, ReasonPressure, ReasonManual}
