// Package cli owns the command-line clients: status, health and events
// (readers of a running daemon's API socket), extend, keep, unkeep, kill
// and reload (its control socket), and history, fleet and migrate (its
// database, or the spool when there is none). Each command is a function
// of its arguments, the environment and two writers that returns the
// exit code: 0, 1 on failure, 2 on a usage error.
//
// What it prints of a process (names, command lines) is escaped
// (printable.go): a process chooses its own name. It may import config
// (flags and socket paths), api (the JSON views it decodes), control (the
// control protocol), tracker (times), events and store (rows and their wire form); never
// the daemon's assembly.
package cli
