// Package e2e holds the end-to-end tests: they build the real supervisor
// binary (../cmd/supervisor, with -race when the tests run with it) and
// drive it from outside, as an operator and the kernel do, against the
// real proc connector, real processes and signals, real cgroups and PSI
// triggers, and a real PostgreSQL. Fake agents are the test binary itself
// run under another name; C helpers are built with cc where Go cannot
// fork fast enough.
//
// The tests are black-box: they talk to the binary through its command
// line, its files (state dir, spool, config) and its sockets (API, control,
// /metrics), and read what it writes to PostgreSQL. They never import the
// daemon's own code (cmd/supervisor, or what it is made of beyond formats).
// Besides the standard library, x/sys/unix and pgx, they may import the
// internal packages that define a format the binary writes or reads, to
// read or forge it: store (spool records), statefile and tracker (the
// state dir's member states; a process's start from /proc as the daemon
// names it), procevents (the proc connector's wire format), api (the JSON
// views of /healthz and /agents, as status and top decode them),
// cgroupinfo and psi (what /proc shows); and test rigs (psi/psitest, and testutil for a
// PostgreSQL database per test).
//
// The harness: harness_test.go (TestMain, ranApart, the daemon under test
// and its log), procs_test.go (the processes tests start, their output,
// pidfds, /proc, their pids cgroup, commands that must succeed),
// modes_test.go (the test binary's other lives: the fake agent, the
// capability and user wrappers, the hostile local user; sandbox_test.go:
// the systemd unit's sandbox), kills_test.go (log lines by their text, what
// a kill line must say), api_test.go (endpoints, metrics, CLI, events),
// helper_c_test.go (C helpers; sources in testdata/*.c), cgroup_helpers_test.go, pg_test.go
// (PostgreSQL), pressure_rig_test.go, and the terminal of top_e2e_test.go
// (a tmux window of the test's own: send-keys, capture-pane).
package e2e
