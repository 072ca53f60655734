package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
)

// What the daemon serves, as the tests read it: GET /agents and GET
// /healthz decode into the views internal/api serves (the ones `supervisor
// top` and `status` decode too; docs/operations.md describes them). Their
// JSON names are pinned by internal/api's TestViewJSONNames, so a change of
// the wire format fails a test there.

// agentView is an entry of GET /agents.
type agentView = api.AgentView

// healthView is GET /healthz.
type healthView = api.HealthView

// apiClient is an HTTP client that reaches the daemon's endpoints: on its
// API socket, or on --listen (/healthz and /metrics only) without one.
// timeout 0: none (a stream). Each request has a connection of its own,
// closed after it: the daemon caps a peer's connections.
func (d *testDaemon) apiClient(timeout time.Duration) *http.Client {
	if d.api == "" {
		return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	return unixClient(d.api, timeout)
}

// unixClient is an HTTP client on the unix socket path, a connection a
// request.
func unixClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// url is the URL of an endpoint for apiClient.
func (d *testDaemon) url(path string) string {
	if d.api == "" {
		return "http://" + d.addr + path
	}
	return "http://supervisor" + path
}

// get GETs path and decodes its JSON answer into v.
func (d *testDaemon) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := d.apiClient(30 * time.Second).Get(d.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// agentsFor returns pid's /agents entries for something queued (an agent or
// a session's leftovers).
func (d *testDaemon) agentsFor(t testing.TB, pid int) []agentView {
	var all []agentView
	d.get(t, "/agents", &all)
	var out []agentView
	for _, a := range all {
		// Entries with no reason are a session's figures alone (exempt,
		// being killed): nothing queued.
		if int(a.PID) == pid && a.Reason != "" {
			out = append(out, a)
		}
	}
	return out
}

// waitTracked waits until the daemon lists pid as an agent.
func (d *testDaemon) waitTracked(t testing.TB, pid int) agentView {
	t.Helper()
	end := time.Now().Add(patient(0))
	for time.Now().Before(end) {
		if as := d.agentsFor(t, pid); len(as) > 0 {
			return as[0]
		}
		d.waitLog(t, time.Until(end), func(m map[string]any) bool {
			return m["msg"] == "agent" && num(m["pid"]) == int64(pid)
		})
	}
	t.Fatalf("pid %d never tracked as an agent", pid)
	return agentView{}
}

// waitSessionMemory waits until /agents shows each session (by its
// agent's PID) holding at least the bytes want says, kept or not: the
// resource sampler has seen it.
func waitSessionMemory(t testing.TB, d *testDaemon, want map[int]int64) {
	t.Helper()
	var all []agentView
	waitFor(t, 30*time.Second, func() bool {
		all = nil
		d.get(t, "/agents", &all)
		ok := 0
		for _, v := range all {
			if f := v.SessionFigures; f != nil && want[int(v.PID)] > 0 && f.MemoryBytes+f.KeptMemoryBytes >= want[int(v.PID)] {
				ok++
			}
		}
		return ok == len(want)
	}, "/agents showing the sessions' memory %v", want)
}

// scrape reads /metrics, on the API socket (which no flood of the TCP
// listeners reaches) when the daemon has one.
func scrape(t testing.TB, d *testDaemon) string {
	t.Helper()
	resp, err := d.apiClient(30 * time.Second).Get(d.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the sample name (with its labels) of /metrics.
func metricValue(t testing.TB, d *testDaemon, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(scrape(t, d), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics lacks %s", name)
	return 0
}

// waitMetric waits until the sample name reads want; the daemon counts
// some things just after it logs them.
func waitMetric(t testing.TB, d *testDaemon, name string, want float64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool { return metricValue(t, d, name) == want }, "%s = %v on /metrics", name, want)
}

// runCLI runs the supervisor binary and returns its stdout, stderr and exit
// code.
func runCLI(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv runs the supervisor binary with extra environment and returns
// its stdout, stderr and exit code.
func runCLIEnv(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(supervisorBin, args...)
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd)
}

// runBounded runs the supervisor binary and returns its stdout, stderr and
// exit code; it fails the test if the command is still running after
// timeout (a `run` that should have refused to start).
func runBounded(t testing.TB, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, errs, code := runCmd(t, exec.CommandContext(ctx, supervisorBin, args...))
	if ctx.Err() != nil {
		t.Fatalf("supervisor %v still running after %s\nstderr: %s", args, timeout, errs)
	}
	return out, errs, code
}

// runCLIAs runs the supervisor binary as another user, through runuser
// with the options as (-u nobody, -G users, ...), and returns its stdout,
// stderr and exit code.
func runCLIAs(t testing.TB, as []string, args ...string) (string, string, int) {
	t.Helper()
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Fatal("runuser (util-linux) is needed: ", err)
	}
	return runCmd(t, exec.Command("runuser", append(append(as, "--", supervisorBin), args...)...))
}

// runCmd runs cmd and returns its stdout, stderr and exit code; a command
// that cannot start fails the test.
func runCmd(t testing.TB, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// ctlSocket is a per-test control socket path: never the default one,
// which a real daemon on this machine may use.
func ctlSocket(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "run", "control.sock")
}

// ctl runs a control command against sock and returns stdout, stderr and
// the exit code.
func ctl(t testing.TB, sock string, args ...string) (string, string, int) {
	t.Helper()
	return runCLI(t, append(args, "--control-socket", sock)...)
}

// mustCtl runs a control command that must succeed.
func mustCtl(t testing.TB, sock string, args ...string) string {
	t.Helper()
	out, errs, code := ctl(t, sock, args...)
	if code != 0 {
		t.Fatalf("supervisor %s: exit %d: %s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// eventStream follows a daemon's GET /events.
type eventStream struct {
	lines chan map[string]any
	resp  *http.Response
}

func openEvents(t testing.TB, d *testDaemon, query string) *eventStream {
	t.Helper()
	resp, err := d.apiClient(0).Get(d.url("/events" + query))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /events%s: %s %s: %s", query, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	s := &eventStream{lines: make(chan map[string]any, 10000), resp: resp}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"type": "bad line", "line": sc.Text()}
			}
			s.lines <- m
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// next returns the next event, failing the test after timeout.
func (s *eventStream) next(t testing.TB, timeout time.Duration) map[string]any {
	t.Helper()
	timeout = patient(timeout)
	select {
	case m, ok := <-s.lines:
		if !ok {
			t.Fatal("the event stream ended")
		}
		if m["type"] == "bad line" {
			t.Fatalf("a line of the stream is not JSON: %q", m["line"])
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return nil
}
