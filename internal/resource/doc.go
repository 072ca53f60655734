// Package resource samples the resource figures of sessions (memory,
// process count, CPU time, idleness) and decides which sessions cross the
// resource limits.
//
// Only session members are read, not every process: the tracker knows them
// exactly (tracker.Table.SessionMembers), so a sample costs one read of
// /proc/PID/stat per member and nothing for the rest of the box. The
// sampler is pure aggregation over a Reader and a Clock, both injected, so
// the idle and limit logic is tested with fakes; ProcReader is the real
// reader.
package resource
