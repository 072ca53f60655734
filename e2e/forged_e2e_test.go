package e2e

import (
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/procevents"
	"github.com/agent-supervisor/supervisor/internal/testutil"
	"golang.org/x/sys/unix"
)

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
