// Package testutil holds what the tests of several packages would
// otherwise each write again: a private PostgreSQL database per test, a
// getenv over given pairs (Env), an accept loop (Accept), a
// user-space proc connector socket to forge events from (ConnectorSocket).
// Only tests import it; nothing the daemon runs depends on it.
package testutil
