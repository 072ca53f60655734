// Package config owns everything the daemon is told: every flag, its
// environment variable and config-file key, its default, its help and its
// check, defined once in one table (options in config.go). Parse turns the
// command line, the environment and the --config file into a checked
// Config before anything runs; a bad value is a usage error (exit 2) that
// names the flag or variable it came from. The help text, the man page and
// docs/configuration.md are generated from the same table.
//
// It also owns the handling of the database URL's secret (secret.go): read
// from a file of mode 0600, and redacted wherever a URL or an error that
// may quote one is printed.
//
// It may import the standard library and the packages whose values it
// parses (tracker rules, psi triggers, initd signal forwarding); nothing
// that runs.
package config
