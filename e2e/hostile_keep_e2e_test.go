package e2e

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// What a process says about itself only delays cleanup after its agent
// ends (issue 17, "Hostile agents"): REAPER_KEEP=1 in an environment spares
// a process and its descendants from leftover kills and from its agent's
// tree kill at max age, nothing else. An agent can set it on itself, so it
// never lifts an agent's max age, and the resource limits and the pressure
// policy count and kill marked processes like any other. Marks cannot be
// laundered by renaming, and a marked parent that exits at once still
// leaves a marked child. Root's word (--keep, a control-socket keep) is
// what exempts.

// TestIntegrationHostileKeepMaxAge: an agent started with REAPER_KEEP=1,
// and one that re-execs itself under it (exec env REAPER_KEEP=1 <agent>),
// are both killed at their max age, and what the re-exec'd agent started
// (its environment, REAPER_KEEP=1 included, inherited) dies with its tree:
// an agent's own mark spares nothing.
func TestIntegrationHostileKeepMaxAge(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hk")[:10]
	d := startDaemon(t, "--agent", comm, "--max-age", maxAge.String(), "--kill-grace", "1s")
	marked := startHolder(t, comm, 1, "REAPER_KEEP=1")
	script := r.script(t, comm, "#!/bin/sh\nexec env REAPER_KEEP=1 "+linkAs(t, "/bin/sh", comm)+
		" -c 'sleep 1000 & echo \"child $! kid\"; wait'\n")
	reexec := startScript(t, script)
	pids, fds := reexec.children(t, "kid")
	for _, a := range []struct {
		a    *agent
		what string
	}{{marked.agent, "started with REAPER_KEEP=1"}, {reexec, "re-exec'd under REAPER_KEEP=1"}} {
		m := d.waitLog(t, maxAge+30*time.Second, killOf(a.a.pid))
		a.a.waitExit(t, 10*time.Second)
		if m["reason"] != "max_age" {
			t.Errorf("agent %s: killed for %v, want max_age", a.what, m["reason"])
		}
		checkKill(t, m, a.a, maxAge)
	}
	if !pidfdDead(fds["kid"], 30*time.Second) {
		t.Errorf("the child (%d) of the agent re-exec'd under REAPER_KEEP=1 survived its tree kill at max age", pids["kid"])
	}
}

// TestIntegrationHostileKeepMemory: a child started with REAPER_KEEP=1
// holding 300 MiB in a session limited to 150 MiB: the session is killed
// for memory, the marked child with it.
//
// The daemon starts once the child holds its memory (its start-up scan
// finds the session): a pidfd on the child is open before anything can
// kill it.
func TestIntegrationHostileKeepMemory(t *testing.T) {
	if ranApart(t) {
		return
	}
	a := startAgent(t, "claude", "-spawn", "label=marked,hold-mb=300,env=REAPER_KEEP=1")
	pids, fds := a.children(t, "marked") // printed once its memory is held
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", "200ms",
		"--session-max-memory", "150MiB")
	over := d.waitLog(t, 60*time.Second, func(m map[string]any) bool {
		return m["msg"] == "session over its limit: killing it" && num(m["session_pid"]) == int64(a.pid)
	})
	if over["reason"] != "memory" || num(over["memory_bytes"]) <= 150<<20 {
		t.Errorf("limit line %v: want reason memory, memory_bytes over 150 MiB (the marked child's counted)", over)
	}
	m := d.waitLog(t, 30*time.Second, killOf(a.pid))
	if m["reason"] != "memory" {
		t.Errorf("agent's kill: reason %v, want memory", m["reason"])
	}
	a.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["marked"], 30*time.Second) {
		t.Errorf("the REAPER_KEEP=1 child (%d) survived its session's memory kill", pids["marked"])
	}
}

// TestIntegrationHostileKeepPressure: under real memory pressure the
// session whose memory is mostly in a REAPER_KEEP=1 child (~300 MiB) is
// the largest and is killed, child included, not the 150 MiB one.
func TestIntegrationHostileKeepPressure(t *testing.T) {
	if ranApartTurn(t, "pressure", needPSI) {
		return
	}
	comm := testutil.RandName("hp")[:10]
	// One kill at most (a 1h cooldown); the minimum age keeps both out of
	// reach of pressure from elsewhere until their figures were sampled.
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", "2s",
		"--pressure", pressureSpec(t), "--pressure-min-age", pressureTestMinAge, "--pressure-cooldown", "1h",
		"--resource-interval", "500ms")
	hider := startAgent(t, comm, "-spawn", "label=marked,hold-mb=300,env=REAPER_KEEP=1")
	pids, fds := hider.children(t, "marked")
	plain := startHolder(t, comm, 150)
	// Sampled: the whole session's memory, however it is split.
	waitSessionMemory(t, d, map[int]int64{hider.pid: 290 << 20, plain.pid: 140 << 20})
	startPressureRig(t)
	kill := d.waitLog(t, 90*time.Second, func(m map[string]any) bool {
		return m["msg"] == "memory pressure: killing the largest session"
	})
	if num(kill["session_pid"]) != int64(hider.pid) {
		t.Fatalf("pressure killed session %v (memory_bytes %v); want %d, whose REAPER_KEEP=1 child holds 300 MiB, not the 150 MiB %d",
			kill["session_pid"], kill["memory_bytes"], hider.pid, plain.pid)
	}
	if mem := num(kill["memory_bytes"]); mem < 290<<20 {
		t.Errorf("the kill's memory_bytes %d: want the marked child's 300 MiB counted", mem)
	}
	hider.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["marked"], 30*time.Second) {
		t.Errorf("the REAPER_KEEP=1 child (%d) survived its session's pressure kill", pids["marked"])
	}
	if _, signalled := plain.termAt(); !plain.alive() || signalled {
		t.Error("the 150 MiB session was signalled")
	}
}

// swarmC: `swarm N MIB FIFO` forks a holder, then N renamers, all
// renaming themselves once a second (prctl(PR_SET_NAME): a comm event each
// time). The holder, forked first, waits for a line on FIFO, then allocates
// and touches MIB MiB. It prints "child PID holder" and, once the renamers
// are forked, "renamers N". Every process dies with its parent
// (PR_SET_PDEATHSIG).
const swarmC = `
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

static void rename_loop(void) {
	for (int i = 0;; i++) {
		prctl(PR_SET_NAME, (i & 1) ? "swarm-a" : "swarm-b", 0, 0, 0);
		sleep(1);
	}
}

static void die_with_parent(pid_t parent) {
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent) _exit(1);
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: swarm N MIB FIFO\n"); return 2; }
	int n = atoi(argv[1]);
	long mib = atol(argv[2]);
	die_with_parent(getppid());
	pid_t self = getpid();
	pid_t h = fork();
	if (h < 0) { perror("fork"); return 1; }
	if (h == 0) {
		die_with_parent(self);
		char c;
		int fd = open(argv[3], O_RDONLY);
		if (fd < 0 || read(fd, &c, 1) != 1) { perror("fifo"); _exit(1); }
		size_t sz = (size_t)mib << 20;
		char *m = malloc(sz);
		if (!m) { perror("malloc"); _exit(1); }
		for (size_t i = 0; i < sz; i += 4096) m[i] = 1;
		printf("held %d\n", getpid());
		fflush(stdout);
		rename_loop();
	}
	printf("child %d holder\n", h);
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0) { perror("fork"); return 1; }
		if (p == 0) {
			die_with_parent(self);
			rename_loop();
		}
	}
	printf("renamers %d\n", n);
	fflush(stdout);
	rename_loop();
	return 0;
}
`

// swarmBin builds the swarm helper.
func swarmBin(t testing.TB) string { return buildC(t, "swarm", swarmC) }

// TestIntegrationHostileKeepSwarm: 300 members renaming themselves once a
// second, in a session holding ~104 MiB (in one more member, renaming
// itself too, forked before them) under an 80 MiB limit, at the default
// 2 s sample: the session is killed for memory. Renames decide no keep mark
// again, and a mark not decided counts as not kept, so the memory cannot
// hide. (It did: with 256 marks read a sample, newest members first, and
// the unread ones counted as kept, the holder was never read.)
func TestIntegrationHostileKeepSwarm(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hs")[:10]
	goFifo := r.fifo(t, "go")
	script := r.script(t, comm, fmt.Sprintf("#!/bin/sh\n%s 300 104 %s &\nwait\n", swarmBin(t), goFifo))
	const interval = 2 * time.Second
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", "1s", "--resource-interval", interval.String(),
		"--session-max-memory", "80MiB")
	a := startScript(t, script)
	pids, fds := a.children(t, "holder")
	a.waitLine(t, "renamers", 60*time.Second)
	// Now the memory.
	r.release(t, "go")
	over := d.waitLog(t, 120*time.Second, func(m map[string]any) bool {
		return m["msg"] == "session over its limit: killing it" && num(m["session_pid"]) == int64(a.pid)
	})
	if over["reason"] != "memory" || num(over["memory_bytes"]) <= 80<<20 || num(over["procs"]) < 300 {
		t.Errorf("limit line %v: want reason memory, memory_bytes over 80 MiB, procs over 300", over)
	}
	// Within a few samples of the memory being held: a count of the
	// daemon's intervals (its policy), not a measure of this machine. The
	// holder prints "held" once it touched all its memory; a sample taken
	// while it is still touching can find the session over the limit
	// already, and then the kill comes first and no line does (the output
	// ends with the session).
	if l, ok := a.out.take("held", 60*time.Second); ok {
		held := time.Now().Add(-time.Duration(boottime() - l.at)) // when the line came
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(over["time"]))
		if err != nil {
			t.Fatalf("limit line time %v: %v", over["time"], err)
		}
		if took := at.Sub(held); took > 10*interval {
			t.Errorf("killed %s after the memory was held: want within 10 sample intervals (%s)", took, 10*interval)
		}
	}
	kill := d.waitLog(t, 30*time.Second, killOf(a.pid))
	// Over the limit, so the holder's memory counted (the 300 renamers
	// hold about 14 MiB): all 104 MiB of it if it was done touching, less
	// if the sample came while it still was.
	if num(kill["memory_bytes"]) <= 80<<20 {
		t.Errorf("kill record %v: want memory_bytes over the 80 MiB limit (the holder's memory counted)", kill)
	}
	a.waitExit(t, 30*time.Second)
	if !pidfdDead(fds["holder"], 30*time.Second) {
		t.Errorf("the swarm's memory holder (%d) survived its session's kill", pids["holder"])
	}
}

// TestIntegrationHostileKeepParentExitsFirst: a process started with
// REAPER_KEEP=1 forks a child and exits at once, before anything read its
// mark; the child then execs with the marker removed from its environment
// (as after sudo's reset). When the agent ends, the child is no leftover:
// the mark passed to it at fork. A nested agent started after the marked
// process exited is the sentinel: once it is tracked, the daemon has seen
// the fork; its leftover kill shows the leftovers were dealt with. (It
// prints its own PID once running: a PID read from a process still in
// execve cannot be proven ours, its environment being half laid out.)
func TestIntegrationHostileKeepParentExitsFirst(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	comm := testutil.RandName("hx")[:10]
	sentinel, _ := fakeAgentShell(t, comm)
	goFifo := r.fifo(t, "go")
	marked := r.script(t, "marked.sh", `#!/bin/sh
( read x < "`+goFifo+`"; exec env -u REAPER_KEEP sleep 1000 ) &
echo "child $! kid"
exit 0
`)
	script := r.script(t, comm, `#!/bin/sh
REAPER_KEEP=1 "`+marked+`"
`+sentinel+` -label sentinel &
while [ ! -e "`+r.path("exit")+`" ]; do sleep 0.05; done
`)
	d := startDaemon(t, "--agent", comm, "--max-age", "1h", "--kill-grace", leftKillGrace.String(),
		"--leftover-grace", leftoverGrace.String())
	a := startScript(t, script)
	pids, fds := a.children(t, "kid", "sentinel")
	d.waitTracked(t, pids["sentinel"])

	// Let the kid exec without the marker, and see that it did.
	r.release(t, "go")
	kid := pids["kid"]
	waitFor(t, 30*time.Second, func() bool {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", kid))
		if pidfdDead(fds["kid"], 0) {
			t.Fatal("the kid died before its agent ended")
		}
		return procComm(kid) == "sleep" && len(env) > 0 && !bytes.Contains(env, []byte("REAPER_KEEP=1"))
	}, "the kid exec'ing sleep without REAPER_KEEP=1")

	leftoverKilled(t, d, r, a, "exit", pids["sentinel"], leftoverGrace, exitSlack)
	if !pidfdDead(fds["sentinel"], 10*time.Second) {
		t.Error("the sentinel survived its leftover kill")
	}
	if pidfdDead(fds["kid"], 0) {
		t.Errorf("the child of a REAPER_KEEP=1 process that exited first (%d) died", kid)
	}
	d.noLogs(t, leftoverOrKillOf(kid), "the child of a REAPER_KEEP=1 process that exited first was treated as a leftover")
}

// TestIntegrationHostileKeepEnvOff: with --keep-env=false, a REAPER_KEEP=1
// child outliving its agent is a leftover like any other, and killed.
func TestIntegrationHostileKeepEnvOff(t *testing.T) {
	if ranApart(t) {
		return
	}
	r := newRig(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", leftKillGrace.String(), "--leftover-grace", leftoverGrace.String(),
		"--keep-env=false")
	a := startAgent(t, "claude", "-exit-file", r.path("exit"), "-spawn", "label=marked,env=REAPER_KEEP=1,term="+r.path("marked.term"))
	pids, fds := a.children(t, "marked")
	d.waitTracked(t, a.pid)
	leftoverKilled(t, d, r, a, "exit", pids["marked"], leftoverGrace, exitSlack)
	if !pidfdDead(fds["marked"], 10*time.Second) {
		t.Error("the REAPER_KEEP=1 leftover survived with --keep-env=false")
	}
	if _, ok := r.termAt("marked.term"); !ok {
		t.Error("the REAPER_KEEP=1 leftover never got SIGTERM")
	}
}
