package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/testutil"
	"golang.org/x/sys/unix"
)

// unitPath is the systemd unit the package installs (packaging/ rewrites
// only the binary's path).
const unitPath = "../scripts/agent-supervisor.service"

// readUnit returns the [Service] section's settings: every value of each
// key, in order.
func readUnit(t testing.TB) map[string][]string {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = l
		case section == "[Service]":
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: %q", unitPath, l)
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

// serviceSettings are the [Service] keys that are no sandbox: what the
// hardening test need not apply. Any other key in the unit must be one
// the test applies (unitSandbox), so that none goes in untested.
var serviceSettings = []string{"Type", "ExecStart", "ExecReload", "Restart", "RestartSec", "KillSignal", "TimeoutStopSec",
	"StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "RuntimeDirectoryMode", "LimitNOFILE"}

// unitSandbox turns the unit's hardening into a sandboxSpec, with state
// and run as its state and runtime directories. It fails the test on a
// setting it does not know how to apply, or a value it does not apply.
func unitSandbox(t testing.TB, state, run string) sandboxSpec {
	t.Helper()
	unit := readUnit(t)
	s := sandboxSpec{Writable: []string{state, run}}
	one := func(k string) string {
		v := unit[k]
		if len(v) != 1 {
			t.Fatalf("%s: %s= given %d times", unitPath, k, len(v))
		}
		return v[0]
	}
	want := func(k, v string) {
		if got := one(k); got != v {
			t.Fatalf("%s: %s=%s; the test applies %s=%s", unitPath, k, got, k, v)
		}
	}
	var filter []string // groups and calls the filter denies
	for k := range unit {
		switch k {
		case "CapabilityBoundingSet":
			for _, name := range strings.Fields(one(k)) {
				c, ok := capNumber[name]
				if !ok {
					t.Fatalf("%s: unknown capability %s", unitPath, name)
				}
				s.Caps = append(s.Caps, c)
			}
		case "NoNewPrivileges":
			want(k, "yes")
			s.NoNewPrivs = true
		case "ProtectSystem":
			want(k, "strict") // all read-only: the root below is
		case "ProtectHome":
			want(k, "read-only")
		case "ProtectKernelTunables", "ProtectKernelModules", "ProtectClock", "ProtectHostname":
			// Read-only /proc/sys and /sys (the root is); the filter's
			// groups; a UTS namespace (SysProcAttr).
			want(k, "yes")
			filter = append(filter, map[string][]string{"ProtectKernelModules": {"@module"}, "ProtectClock": {"@clock"},
				"ProtectHostname": {"sethostname", "setdomainname"}}[k]...)
		case "PrivateTmp":
			want(k, "yes")
			s.PrivateTmp = true
		case "PrivateDevices":
			want(k, "yes")
			s.PrivateDevices = true
			filter = append(filter, "@raw-io")
		case "ProtectKernelLogs":
			want(k, "yes")
			s.ProtectKernelLogs = true
			filter = append(filter, "syslog")
		case "ProtectProc":
			want(k, "invisible")
			s.ProtectProc = true
		case "UMask":
			u, err := strconv.ParseInt(one(k), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
			s.Umask = int(u)
		case "SystemCallArchitectures":
			want(k, "native")
			s.Native = true
		case "SystemCallFilter":
			v, ok := strings.CutPrefix(one(k), "~")
			if !ok {
				t.Fatalf("%s: SystemCallFilter=%s: the test applies a deny list (~) alone", unitPath, one(k))
			}
			filter = append(filter, strings.Fields(v)...)
		case "SystemCallErrorNumber":
			want(k, "EPERM")
		case "RestrictAddressFamilies":
			for _, f := range strings.Fields(one(k)) {
				n, ok := map[string]int{"AF_UNIX": unix.AF_UNIX, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6, "AF_NETLINK": unix.AF_NETLINK}[f]
				if !ok {
					t.Fatalf("%s: RestrictAddressFamilies: the test does not know %s", unitPath, f)
				}
				s.Families = append(s.Families, n)
			}
		default:
			if !slices.Contains(serviceSettings, k) {
				t.Fatalf("%s: %s= is a setting this test does not apply: apply it in unitSandbox (and sandboxExec) before the unit may have it", unitPath, k)
			}
		}
	}
	s.Deny = syscallNumbers(t, filter)
	return s
}

// capNumber maps capability names to numbers (capability.h).
var capNumber = map[string]int{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
	"CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10,
	"CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20,
	"CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23, "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25,
	"CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30,
	"CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}

// syscallNumbers expands systemd's groups (@clock, ...) as systemd-analyze
// lists them and numbers every call this machine has (the C library's
// <sys/syscall.h>); calls of other architectures are left out, as systemd
// leaves them.
func syscallNumbers(t testing.TB, names []string) []int {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze") // needTools made sure
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cc", "-dM", "-E", "-x", "c", "-", "-include", "sys/syscall.h").CombinedOutput()
	if err != nil {
		t.Fatalf("cc: the system call numbers: %v\n%s", err, out)
	}
	numbers := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^#define __NR_(\w+) (\d+)$`).FindAllStringSubmatch(string(out), -1) {
		numbers[m[1]], _ = strconv.Atoi(m[2])
	}
	if numbers["mount"] == 0 {
		t.Fatalf("no number for mount in <sys/syscall.h>")
	}
	var nrs []int
	var expand func(string)
	expand = func(name string) {
		if !strings.HasPrefix(name, "@") {
			if nr, ok := numbers[name]; ok && !slices.Contains(nrs, nr) {
				nrs = append(nrs, nr)
			}
			return
		}
		out, err := exec.Command(analyze, "syscall-filter", name).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze syscall-filter %s: %v\n%s", name, err, out)
		}
		for _, l := range strings.Split(string(out), "\n")[1:] {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				expand(l)
			}
		}
	}
	for _, n := range names {
		expand(n)
	}
	slices.Sort(nrs)
	return nrs
}

// TestIntegrationHardenedUnit runs the daemon as the unit would: with
// exactly its capability bounding set and no new privileges, on a
// read-only root but for its state and runtime directories (a mount
// namespace) with a private /tmp, /dev and /proc (hidepid=invisible), its
// umask and its system call filter. It subscribes to the proc connector
// (and sets its receive buffer and SCHED_FIFO), kills an agent at its
// deadline (and another user's agent), spools the kill while its
// PostgreSQL (over TCP) is down and delivers it once it is back,
// and answers on its API and control sockets.
func TestIntegrationHardenedUnit(t *testing.T) {
	if ranApart(t, func(t testing.TB) { needTools(t, "systemd-analyze", "cc") }) {
		return
	}
	dir := t.TempDir()
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	for _, d := range []string{state, run} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	spec := unitSandbox(t, state, run)
	js, _ := json.Marshal(spec)
	c := newCluster(t)
	conn := dbConn(t, c.url(c.password))
	ctl := filepath.Join(run, "control.sock")
	cmd := exec.Command(os.Args[0], append([]string{supervisorBin}, daemonArgs(t, "--state-dir", state,
		"--control-socket", ctl, "--api-socket", filepath.Join(run, "api.sock"),
		"--max-age", maxAge.String(), "--kill-grace", "2s", "--database-url", c.url(c.password))...)...)
	cmd.Env = append(os.Environ(), sandboxEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	d := startDaemonCmd(t, cmd)
	ready := d.waitLog(t, time.Second, func(m map[string]any) bool { return m["msg"] == "ready" })
	if ready["source"] != "netlink" || ready["realtime_timer"] != true || num(ready["rcvbuf"]) < 8<<20 {
		t.Errorf("ready %v: want the proc connector (netlink), the SCHED_FIFO timer and an 8 MiB receive buffer", ready)
	}

	// The sandbox is the unit's: what the kernel says of the daemon.
	pid := d.cmd.Process.Pid
	var bnd uint64
	for _, c := range spec.Caps {
		bnd |= 1 << c
	}
	for k, v := range map[string]string{"CapBnd": fmt.Sprintf("%016x", bnd), "CapEff": fmt.Sprintf("%016x", bnd),
		"CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2", "Umask": fmt.Sprintf("%04o", spec.Umask)} {
		if got := procStatus(pid, k); got != v {
			t.Errorf("daemon's %s: %s, want %s", k, got, v)
		}
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	rw := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(mounts)), "\n") {
		f := strings.Fields(l) // id parent dev root mountpoint options ...
		rw[f[4]] = slices.Contains(strings.Split(f[5], ","), "rw")
	}
	for _, m := range []string{"/", "/proc", "/dev", "/usr", "/etc"} {
		if v, ok := rw[m]; ok && v {
			t.Errorf("%s is writable in the daemon's mount namespace", m)
		}
	}
	for _, m := range []string{state, run, "/tmp"} {
		if !rw[m] {
			t.Errorf("%s is not a writable mount in the daemon's mount namespace", m)
		}
	}

	// The database over TCP: the daemon's first snapshot arrives. Then
	// it stops, so that the kill below stays in the spool until it is
	// back.
	if n := waitCount(t, conn, 30*time.Second, 1, "SELECT count(*) FROM tel.system_health"); n < 1 {
		t.Fatal("no snapshot in PostgreSQL over TCP")
	}
	conn.Close(context.Background())
	c.stop(t)

	a := startAgent(t, "claude")
	other := startOtherUsersAgent(t)
	d.waitTracked(t, a.pid) // GET /agents on the API socket
	if out := mustCtl(t, ctl, "reload"); !strings.Contains(out, "ok") {
		t.Errorf("supervisor reload on the control socket: %q", out)
	}
	m := d.waitLog(t, maxAge+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, maxAge)
	// Another user's agent, in a /proc that hides it from anyone
	// without CAP_SYS_PTRACE, and signalled with CAP_KILL.
	d.waitLog(t, maxAge+20*time.Second, killOf(other.cmd.Process.Pid))
	select {
	case <-other.done:
		if ws, ok := other.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGTERM {
			t.Errorf("the other user's agent ended with %v, want SIGTERM", other.err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the other user's agent still runs 20 s after its kill")
	}
	waitFor(t, 20*time.Second, func() bool {
		recs := killRecords(t, state, a.pid)
		return len(recs) > 0 && recs[len(recs)-1].Kill.Outcome == "terminated"
	}, "the kill of %d in the spool", a.pid)

	c.start(t)
	conn = dbConn(t, c.url(c.password))
	if n := waitCount(t, conn, 60*time.Second, 1, "SELECT count(*) FROM tel.agent_kills WHERE pid = $1", a.pid); n != 1 {
		t.Errorf("%d rows of the kill in PostgreSQL over TCP, want 1", n)
	}
}

// otherAgent is an agent of another user: its process and its end.
type otherAgent struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited; err is its Wait's
	err  error
}

// startOtherUsersAgent runs an agent as nobody: sleep, copied as claude
// into a directory anyone may read. It is killed at cleanup if still
// there.
func startOtherUsersAgent(t *testing.T) *otherAgent {
	t.Helper()
	dir := publicTempDir(t, "sv-nobody-")
	if err := os.WriteFile(filepath.Join(dir, "claude"), readFile(t, "/bin/sleep"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := &otherAgent{cmd: exec.Command(filepath.Join(dir, "claude"), "600"), done: make(chan struct{})}
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID}}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.cmd.Process.Kill()
			<-a.done
		}
	})
	return a
}

// Forged proc connector events: whoever may multicast to the connector
// can claim to be the kernel; the daemon must not act on what it forges.

// forger multicasts proc connector messages from a user-space netlink
// socket, as any process with CAP_NET_ADMIN in the host network namespace
// can: the kernel's connector socket does not restrict who sends to
// CN_IDX_PROC.
type forger struct {
	fd   int
	port uint32
}

func newForger(t testing.TB) *forger {
	t.Helper()
	fd, port := testutil.ConnectorSocket(t)
	return &forger{fd: fd, port: port}
}

// send forges one event: nlmsghdr + cn_msg + proc_event, addressed as the
// kernel's own (nl_pid 0, group CN_IDX_PROC), stamped now (CLOCK_MONOTONIC,
// as ktime_get_ns) so that no identity check can call it stale, and from a
// CPU no real one has, so that its sequence number cannot look like a gap
// in the kernel's (a gap would trigger a resync from /proc that undoes the
// forgery: an attacker would avoid it too).
func (f *forger) send(t testing.TB, ev procevents.Event) {
	t.Helper()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	ev.Timestamp = uint64(ts.Nano())
	ev.CPU = 1<<20 + ev.Seq
	msg := procevents.Encode(make([]byte, 16), &ev)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg))) // nlmsg_len
	binary.NativeEndian.PutUint16(msg[4:6], unix.NLMSG_DONE)  // nlmsg_type
	if err := unix.Sendto(f.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: 0, Groups: 1}); err != nil {
		t.Fatalf("forge %s: sendto: %v", ev.Type, err)
	}
}

// A forged COMM renames a bystander to "claude" and a forged EXIT makes
// the daemon forget a real agent: neither may work.
func TestIntegrationForgedEvents(t *testing.T) {
	if ranApart(t) {
		return
	}
	const age, grace = 3 * time.Second, time.Second
	d := startDaemon(t, "--max-age", age.String(), "--kill-grace", grace.String())
	victim := exec.Command("sleep", "60")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	vfd := pidfdOf(t, victim.Process.Pid)
	a := startAgent(t, "claude")
	// The agent forked after the victim: once it is tracked, the victim's
	// fork and exec are in the table too, so a rename would apply to it.
	d.waitTracked(t, a.pid)

	f := newForger(t)
	vpid := int32(victim.Process.Pid)
	comm := procevents.Event{Type: procevents.Comm, Seq: 1, PID: vpid, TGID: vpid}
	copy(comm.Comm[:], "claude")
	f.send(t, comm)
	f.send(t, procevents.Event{Type: procevents.Exit, Seq: 2, PID: int32(a.pid), TGID: int32(a.pid),
		ExitSignal: uint32(unix.SIGCHLD), ParentPID: int32(a.pid), ParentTGID: 1})

	warn := d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "forged proc connector message dropped"
	})
	if m := warn["level"]; m != "warn" {
		t.Errorf("forged message logged at %v, want warn", m)
	}
	if port := num(warn["sender_port"]); port != int64(f.port) {
		t.Errorf("sender_port %d, want the forger's %d", port, f.port)
	}

	// The victim started before the forgery: had the rename worked, it
	// would have been signalled within max age + grace of now.
	if pidfdDead(vfd, age+grace+2*time.Second) {
		t.Error("the victim of a forged rename died")
	}
	// The real agent still dies at its own deadline, not before.
	m := d.waitLog(t, age+20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
	if l := d.findLogs(func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		return (msg == "agent" || strings.Contains(msg, "kill")) && num(m["pid"]) == int64(vpid)
	}); len(l) > 0 {
		t.Errorf("the daemon acted on the forged rename: %v", l)
	}
	var h healthView
	d.get(t, "/healthz", &h)
	if h.Forged < 2 {
		t.Errorf("/healthz forged = %d, want at least 2", h.Forged)
	}
	if n := len(d.findLogs(func(m map[string]any) bool { return m["msg"] == "forged proc connector message dropped" })); n != 1 {
		t.Errorf("%d forged-message warnings, want exactly 1", n)
	}
	if v := metricValue(t, d, "supervisor_events_forged_total"); v == 0 {
		t.Errorf("supervisor_events_forged_total %v, want at least 2", v)
	}
}
