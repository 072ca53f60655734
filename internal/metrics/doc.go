// Package metrics owns the daemon's Prometheus registry and the metrics
// that change as things happen: kills by reason, final signal and outcome,
// leftovers, retries, lateness, the last snapshot's zombies and memory,
// the event stream's clients. Every known series exists from the start at
// 0. Counters another part keeps already (the tracker's, the reaper's, the
// store's, the endpoints') are read at scrape time by collectors their
// owners Register.
//
// It is a sink: it may import the packages whose results it counts
// (reap, health, tracker's reasons, procevents, events), never one that
// feeds it.
package metrics
