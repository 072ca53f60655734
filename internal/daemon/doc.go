// Package daemon assembles the supervisor and runs it: it opens the event
// source, builds the tracker, the reaper, the policies and the store from a
// config.Config, starts them in order, reloads them on SIGHUP and stops them
// in reverse order.
package daemon
