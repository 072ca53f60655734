// Package daemon assembles the supervisor and runs it: it opens the event
// source, builds the tracker, the reaper, the policies and the store from a
// config.Config, starts them in order (subscribe, scan, sockets, timer,
// store, intake), reloads them on SIGHUP and stops them in the order that
// loses nothing (endpoints, control socket, deadlines, in-flight kills,
// intake, store).
//
// It is the assembly: it may import every part of internal/ except cli.
package daemon
