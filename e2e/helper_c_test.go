package e2e

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// forkerC is a small C helper for where Go is too slow to fork: `forker
// burst NAME N [stubborn]` clones N children that wait in pause() (so
// their deadlines fall within milliseconds), name themselves NAME, die
// with the forker (PR_SET_PDEATHSIG: a failed run leaves nothing behind)
// and, with stubborn, ignore SIGTERM; it prints "ready FIRST LAST"
// (CLOCK_BOOTTIME ns of the first and last clone), then "exit PID
// BOOTTIME_NS" for each child it reaps, then "done". `forker storm
// SECONDS` forks children that exit at once, as fast as it can, and prints
// how many; `forker hold N` forks N children that pause() and prints
// "ready".
//
// `forker sessions NAME A C` builds sessions for the leftover benchmarks:
// it forks A agents; each forks C children that ignore SIGTERM and
// pause(), then renames itself NAME (so its children, forked first, keep
// the helper's name and are no agents themselves) and pause()s. The agents
// die with the helper (PR_SET_PDEATHSIG); their children must outlive them,
// so the benchmark kills the whole process group at cleanup. Once every
// agent is renamed it prints "ready". Then a line "exit STAGGER_US" on its
// stdin sends SIGUSR1 (whose default action ends the agent) to each agent
// in turn, STAGGER_US apart, printing "sent PID BOOTTIME_NS" just before
// each: no agent exits before its line's time. It reaps them and prints
// "done". With SESSFORKER_WAKE_MS set, the children wake that often and
// burn SESSFORKER_BURN_US of CPU each time (working processes).
//
//go:embed testdata/forker.c
var forkerC string

var (
	cHelpersMu sync.Mutex
	cHelpers   = map[string]string{} // path under helperDir: the binary, or "" if cc failed
)

// buildC builds a C helper from src, once per test process, at path
// under helperDir (the directory part lets a helper have an agent's name:
// leader/claude). cc is on every machine of this kind: it is what cgo
// uses. flags are cc's too.
func buildC(t testing.TB, path, src string, flags ...string) string {
	t.Helper()
	cHelpersMu.Lock()
	defer cHelpersMu.Unlock()
	bin, done := cHelpers[path]
	if !done {
		bin = filepath.Join(helperDir, path)
		os.MkdirAll(filepath.Dir(bin), 0o755)
		if err := os.WriteFile(bin+".c", []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-O2", "-o", bin, bin + ".c"}, flags...)
		if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
			t.Logf("cc %s: %v\n%s", path, err, out)
			bin = ""
		}
		cHelpers[path] = bin
	}
	if bin == "" {
		t.Fatalf("the C helper %s does not build (cc's output is logged at its first build)", path)
	}
	return bin
}

// forker builds the forker.
func forker(t testing.TB) string { return buildC(t, "forker", forkerC) }

// leaderC is a multi-threaded agent whose leader thread does not outlive
// the process: `claude pthread-exit` starts a thread that waits forever and
// ends its main thread with pthread_exit (the leader stays a zombie while
// the thread runs); `claude exec-thread` has its second thread execve
// `claude wait`, so de_thread kills the leader and the thread takes its PID.
//
//go:embed testdata/leader.c
var leaderC string

// faultfsC is the FUSE server, written against the kernel's protocol
// (<linux/fuse.h>, no libfuse): `faultfs BACKING MOUNTPOINT` mounts itself
// on MOUNTPOINT, passing every operation through to BACKING, prints
// "ready", and serves until unmounted. SIGUSR1 makes it read-only (EROFS
// for every write, create, truncate, chmod, unlink, rename, mkdir and
// open for writing), SIGHUP makes every fsync fail with EIO, SIGUSR2 ends
// either. Single-threaded, one directory level: enough for a state dir.
//
//go:embed testdata/faultfs.c
var faultfsC string

// swarmC: `swarm N MIB FIFO` forks a holder, then N renamers, all
// renaming themselves once a second (prctl(PR_SET_NAME): a comm event each
// time). The holder, forked first, waits for a line on FIFO, then allocates
// and touches MIB MiB. It prints "child PID holder" and, once the renamers
// are forked, "renamers N". Every process dies with its parent
// (PR_SET_PDEATHSIG).
//
//go:embed testdata/swarm.c
var swarmC string

// initHelperC is the C helper the init tests and benchmark run as CMD's
// worker (Go cannot fork without exec, and a shell is too slow for a
// storm):
//
//	inithelper orphans N RATE   make N orphans, RATE a second (0: flat out):
//	                            each a double fork whose grandchild waits until
//	                            its parent has exited (so it is reparented
//	                            alive, to PID 1 or the nearest subreaper:
//	                            kernel/exit.c, find_new_reaper), then exits;
//	                            prints "orphans N SECONDS"
//	inithelper zombies MS COMM  wait up to MS for no process whose parent is
//	                            PID 1 to be a zombie or a live COMM; prints
//	                            "zombies ALL init INIT orphans LIVE waited_ms W"
//	                            (ALL: zombies in /proc; INIT: those of PID 1;
//	                            LIVE: live COMM processes under PID 1)
//
//go:embed testdata/inithelper.c
var initHelperC string

// soakgenC is the soak's session generator, one static binary in three
// lives, each exec'd under its own name (its comm, which is what the agent
// rules match, is the name of the symlink it runs through):
//
//   - `soak-agent agent LIFE_MS LEFT FD MEMBER`, the session's agent:
//     forks three members, each exec'ing MEMBER; lives LIFE_MS, then
//     either kills and reaps its members and exits (LEFT 0: nothing
//     outlives it), or writes its PID and theirs as a line to FD and exits
//     without them (LEFT 1: they are leftovers, the leftovers policy must
//     kill them).
//   - `soak-member member`, a member: no agent (it runs under a name no
//     rule matches), it pause()s until killed.
//   - `soakgen gen AGENT MEMBER N CONC MIN_MS MAX_MS GAP_FROM GAP_TO
//     LEFT_PCT SEED`, the generator: a child subreaper at nice 10 (the
//     load it makes must not starve the daemon it measures) that runs N
//     sessions, CONC at a time, each agent exec'd as AGENT (dying with the
//     generator: PR_SET_PDEATHSIG), with a life drawn uniformly from
//     MIN_MS..MAX_MS but outside (GAP_FROM, GAP_TO) — around the max age,
//     so that every agent either ends on its own well before its deadline
//     or is killed at it, never a race of the two — and LEFT in LEFT_PCT
//     percent of the sessions (SEED seeds the draws). SIGUSR1 makes it
//     start no more sessions (N becomes those started). It prints
//     "progress K" each time another twentieth of the sessions has
//     started, and at the end "done STARTED EXITED KILLED MADE REAPED
//     MISSED STRAY ODD": agents that ended on their own and agents killed
//     by a signal (the daemon's max-age kills); leftovers made (members
//     whose agent exited without them, from the agents' lines) and
//     leftovers killed (those that then died of a signal: nobody but the
//     daemon sends one); MISSED: leftovers still alive 5 s after the last
//     agent ended, STRAY: other processes still there then (both killed by
//     the generator); ODD: agents or leftovers that ended otherwise (an
//     exit status). With SOAK_DEBUG set it names each leftover missed and
//     its agent on stderr.
//
//go:embed testdata/soakgen.c
var soakgenC string
