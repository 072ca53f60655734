// Package config owns everything the daemon is told: every flag, its
// environment variable and config-file key, its default, its help and its
// check, defined once in one table (options in config.go). Parse turns the
// command line, the environment and the --config file into a checked
// Config before anything runs; a bad value is a usage error (exit 2) that
// names the flag or variable it came from.
//
// The subcommands are a table too (commands in commands.go): each one's
// synopsis, description and own flags. A command builds its flag set from
// it (NewFlagSet, or Parse for those that take the daemon options) and
// reads its values through String, Bool, Duration, BoolVar and
// DurationVar, so no flag is defined anywhere else.
//
// From the two tables come the --help texts (help.go), docs/configuration.md
// and the man page docs/supervisor.8 (docs.go, with the prose of
// templates/): `go generate ./internal/config` rewrites the two files and
// TestDocsGenerated fails when a committed one differs.
//
// It also owns the handling of the database URL's secret (secret.go): read
// from a file of mode 0600, and redacted wherever a URL or an error that
// may quote one is printed.
//
// It may import the standard library and the packages whose values it
// parses (tracker rules, psi triggers, initd signal forwarding); nothing
// that runs.
package config
