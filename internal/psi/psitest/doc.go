// Package psitest makes real memory pressure for tests: a memory cgroup
// with a small limit and processes re-reading, in a loop, a file larger
// than the limit that was written from inside it. Its page cache is
// charged to the cgroup, so every pass reclaims and refaults pages and the
// readers stall in memory reclaim, which PSI counts — in the cgroup and in
// /proc/pressure/memory. Nothing else on the machine is squeezed, and
// there is no anonymous memory to OOM-kill. Group and Mkdir, which make
// its cgroup, serve tests that want a memory-limited cgroup of their own.
//
// Only tests import it.
package psitest
