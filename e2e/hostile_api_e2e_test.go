package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/testutil"
	"github.com/agent-supervisor/supervisor/internal/tracker"
)

// Hostile local users against the daemon's endpoints (issue 17): a flood
// of idle connections, reading other users' processes, hogging /events,
// and control commands naming a process by PID alone.
//
// The hostile side is this test binary again, started as root with
// SUPERVISOR_TEST_HOSTILE=MODE and SUPERVISOR_TEST_CRED=UID:GID[:GROUPS];
// it drops to those credentials itself before doing anything (the binary
// sits in a directory only root may enter, so it cannot be exec'd as the
// user), then acts as an unprivileged local user would.

// The daemon's connection limits, as docs/operations.md (Endpoints) gives
// them.
const (
	tcpMaxConns      = 32  // each TCP listener's connections
	tcpConnsPerIP    = 8   // one remote address's, on a listener not on loopback
	tcpConnRequests  = 100 // a keep-alive connection is closed after this many requests
	apiGroupConns    = 32  // the --control-group members' API connections together
	apiStreamsPerUID = 4   // a member's /events streams
)

const (
	hostileCredEnv = "SUPERVISOR_TEST_CRED"
	nobodyUID      = 65534
	nobodyGID      = 65534
)

// hostileHelper is the helper's life (modes_test.go): it drops to the
// credentials in hostileCredEnv, then acts.
func hostileHelper(mode string) int {
	if err := dropTo(os.Getenv(hostileCredEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "hostile helper:", err)
		return 1
	}
	return hostileMain(mode, os.Args[1:])
}

// dropTo sets this process's groups, gid and uid (all threads: Go's
// syscall.Set* apply to every thread since Go 1.16).
func dropTo(cred string) error {
	f := strings.Split(cred, ":")
	if len(f) < 2 {
		return fmt.Errorf("bad %s %q", hostileCredEnv, cred)
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad %s %q", hostileCredEnv, cred)
	}
	groups := []int{}
	if len(f) > 2 && f[2] != "" {
		for _, g := range strings.Split(f[2], ",") {
			n, err := strconv.Atoi(g)
			if err != nil {
				return fmt.Errorf("bad group %q", g)
			}
			groups = append(groups, n)
		}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	if os.Geteuid() != uid {
		return fmt.Errorf("still uid %d", os.Geteuid())
	}
	return nil
}

// hostileMain is the helper's body. Modes:
//
//	flood ADDR N [FROM]
//	               hold N keep-alive connections to ADDR (from the local
//	               address FROM, e.g. 127.0.0.2), each sending GET /healthz
//	               every 4 s, just inside the server's 5 s idle timeout, so
//	               that a slot once taken is never let go; a connection the
//	               server closes is opened again a second or so after its
//	               close. Prints "flooding N" once each has been tried,
//	               then runs until stdin closes.
//	get unix:PATH|tcp:ADDR URLPATH
//	               one GET; prints "status CODE" and the body, or "error: ...".
//	streams PATH N open N /events streams on the unix socket PATH, one
//	               connection each, and keep the ones answered 200 open;
//	               prints "streams OK" (how many were), then runs until
//	               stdin closes.
func hostileMain(mode string, args []string) int {
	switch {
	case mode == "flood" && (len(args) == 2 || len(args) == 3):
		n, _ := strconv.Atoi(args[1])
		from := ""
		if len(args) == 3 {
			from = args[2]
		}
		flood(args[0], n, from)
	case mode == "get" && len(args) == 2:
		hostileGet(args[0], args[1])
		return 0
	case mode == "streams" && len(args) == 2:
		n, _ := strconv.Atoi(args[1])
		hostileStreams(args[0], n)
	default:
		fmt.Fprintf(os.Stderr, "hostile helper: bad mode %q %q\n", mode, args)
		return 2
	}
	io.Copy(io.Discard, os.Stdin) // until the test closes it or kills us
	return 0
}

// flood is the hostile side of the HTTP flood: an attacker who holds slots
// (a request before each idle timeout) and retakes each one freed. It
// never spins: a connection is opened again only after the previous one
// is closed and a pause of a second or more, and all of them together
// open at most floodDialsPerSecond, so the flood itself cannot starve the
// machine the daemon and the test run on (it runs at normal priority).
func flood(addr string, n int, from string) {
	const floodDialsPerSecond = 200
	dials := time.NewTicker(time.Second / floodDialsPerSecond)
	dialer := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	var first sync.WaitGroup
	first.Add(n)
	for i := range n {
		go func() {
			tried := sync.OnceFunc(first.Done)
			for {
				<-dials.C
				if c, err := dialer.Dial("tcp", addr); err == nil {
					hold(c, tried)
					c.Close()
				}
				tried()
				// 1 to 2 s, spread so that they do not come back at once.
				time.Sleep(time.Second + time.Duration(i%100)*10*time.Millisecond)
			}
		}()
	}
	first.Wait()
	fmt.Printf("flooding %d\n", n)
}

// hold sends GET /healthz on c every 4 s and reads each answer, until the
// server closes c or fails a request; tried is called after the first
// request is sent.
func hold(c net.Conn, tried func()) {
	br := bufio.NewReader(c)
	for {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			return
		}
		tried()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			return // the server said it closes this one
		}
		time.Sleep(4 * time.Second)
	}
}

func hostileGet(target, path string) {
	c, url := &http.Client{Timeout: 10 * time.Second}, ""
	switch kind, where, _ := strings.Cut(target, ":"); kind {
	case "unix":
		c, url = unixClient(where, 10*time.Second), "http://supervisor"+path
	default:
		url = "http://" + where + path
	}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return
	}
	defer resp.Body.Close()
	// An /events stream that was let through never ends: its first
	// bytes are enough.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK && strings.HasSuffix(path, "/events") {
		b = nil
	}
	fmt.Printf("status %d\n%s\n", resp.StatusCode, b)
}

func hostileStreams(sock string, n int) {
	ok := 0
	for range n {
		tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		resp, err := (&http.Client{Transport: tr}).Get("http://supervisor/events")
		if err != nil {
			fmt.Printf("stream: %v\n", err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			fmt.Printf("stream: %s %s\n", resp.Status, strings.TrimSpace(string(b)))
			continue
		}
		ok++
		go io.Copy(io.Discard, resp.Body) // a reading client: never dropped as slow
	}
	fmt.Printf("streams %d\n", ok)
}

// startFlood runs the helper's flood (see hostileMain) as nobody, of n
// connections to addr, from the local address from[0] if given, and waits
// until each has been tried.
func startFlood(t *testing.T, addr string, n int, from ...string) *agent {
	t.Helper()
	fl := startHostile(t, fmt.Sprintf("%d:%d", nobodyUID, nobodyGID), "flood", append([]string{addr, strconv.Itoa(n)}, from...)...)
	fl.waitLine(t, "flooding ", 60*time.Second)
	return fl
}

// floodGoesOn fails the test at once if the flood fl has ended: what the
// test saw then was not under the flood.
func floodGoesOn(t *testing.T, fl *agent) {
	t.Helper()
	select {
	case <-fl.done:
		t.Fatal("the flood ended early: the test proved nothing")
	default:
	}
}

// startHostile runs the helper as cred (UID:GID[:GROUPS]). It runs until
// the test ends: its stdin, a pipe the test holds open, closes then.
func startHostile(t *testing.T, cred, mode string, args ...string) *agent {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), hostileEnv+"="+mode, hostileCredEnv+"="+cred)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	return runAgent(t, cmd)
}

// hostileGetAs runs one GET as cred and returns the status code (0 when
// the connection failed) and what the helper printed.
func hostileGetAs(t *testing.T, cred, target, path string) (int, string) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, target, path)
	cmd.Env = append(os.Environ(), hostileEnv+"=get", hostileCredEnv+"="+cred)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hostile get %s %s: %v\n%s", target, path, err, out)
	}
	s := string(out)
	if v, ok := strings.CutPrefix(s, "status "); ok {
		code, _ := strconv.Atoi(strings.Fields(v)[0])
		return code, s
	}
	return 0, s
}

// apiDir is a short directory for a test's API socket, traversable by
// everyone (0755) so that only the socket's own mode and the peer check
// stand between another user and the daemon.
func apiDir(t *testing.T) string {
	return publicTempDir(t, "sv-hostile-")
}

// within tries something that must answer within bound three times, each
// with a fresh bound (try must give up when ctx does), and fails the test
// unless at least two of them answered: one slow moment of a loaded
// machine is not the daemon's doing, a flood that holds the way is. It
// logs every attempt and how long it took.
func within(t *testing.T, what string, bound time.Duration, try func(ctx context.Context) error) {
	t.Helper()
	ok := 0
	var tries []string
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		t0 := time.Now()
		err := try(ctx)
		took := time.Since(t0)
		cancel()
		if err == nil {
			ok++
			tries = append(tries, took.Round(time.Millisecond).String())
		} else {
			tries = append(tries, fmt.Sprintf("%s: %v", took.Round(time.Millisecond), err))
		}
	}
	t.Logf("%s: %d of 3 within %s (%s)", what, ok, bound, strings.Join(tries, "; "))
	if ok < 2 {
		t.Errorf("%s: %d of 3 answered within %s, want at least 2: %s", what, ok, bound, strings.Join(tries, "; "))
	}
}

// getHealthz GETs /healthz with c and wants 200 and status ok.
func getHealthz(ctx context.Context, c *http.Client, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h healthView
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Status != "ok" {
		return fmt.Errorf("%s %+v %v", resp.Status, h, err)
	}
	return nil
}

// rootHealthz: /healthz on the daemon's API socket, as root.
func rootHealthz(d *testDaemon) func(context.Context) error {
	return func(ctx context.Context) error { return getHealthz(ctx, d.apiClient(0), d.url("/healthz")) }
}

// probeHealth: what the DaemonSet's probe runs, supervisor health on the
// API socket, with the bound as its --timeout: the command's own clock
// bounds the answer; the exec around it is not what is measured. (The race
// detector's pause at exit, a second by default, is turned off.)
func probeHealth(d *testDaemon, bound time.Duration) func(context.Context) error {
	return func(context.Context) error {
		cmd := exec.Command(supervisorBin, "health", "--api-socket", d.api, "--timeout", bound.String())
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		if !strings.Contains(string(out), `"status": "ok"`) {
			return fmt.Errorf("no ready status: %s", out)
		}
		return nil
	}
}

// tcpHealthz: /healthz on a TCP listener at addr, on a fresh connection
// (from the local address from, when given).
func tcpHealthz(addr, from string) func(context.Context) error {
	return func(ctx context.Context) error {
		dialer := &net.Dialer{}
		if from != "" {
			dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
		return getHealthz(ctx, c, "http://"+addr+"/healthz")
	}
}

// An unprivileged user holds 600 keep-alive connections to the --listen
// port of a daemon limited to 512 descriptors, each sending a request just
// inside the idle timeout, and retakes every slot freed: the daemon's
// descriptors stay bounded (the connection cap, accept-then-close), an
// agent started during the flood is matched and killed on time, root gets
// /healthz on the API socket within 1 s, so does the probe (supervisor
// health), and --metrics-listen, a second listener with a cap of its own,
// still answers a fresh connection. (Before, each connection held a
// descriptor for good: the daemon ran out, its /proc read at exec failed
// with EMFILE and the agent was never matched; then, with one cap for both
// listeners, the flood of one refused the other, and the kubelet's probe
// on it, which restarted the pod.)
func TestIntegrationHostileHTTPFlood(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("prlimit (util-linux) is needed: ", err)
	}
	const age, limit, conns = 3 * time.Second, 512, 600
	name := testutil.RandName("fl")
	sock := filepath.Join(apiDir(t), "api.sock")
	d := startDaemonCmd(t, exec.Command("prlimit", fmt.Sprintf("--nofile=%d:%d", limit, limit), "--",
		supervisorBin, "run", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--under", strconv.Itoa(os.Getpid()),
		"--state-dir", t.TempDir(), "--log-level", "info", "--control-socket", "", "--api-socket", sock,
		"--max-age", age.String(), "--kill-grace", "1s", "--agent", name))
	pid := d.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid)); err != nil || !strings.Contains(string(b), fmt.Sprintf("Max open files            %d                  %d", limit, limit)) {
		t.Fatalf("the daemon's descriptor limit is not %d: %v\n%s", limit, err, b)
	}
	ml := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := ml["metrics_listen"].(string)
	if maddr == "" || maddr == d.addr {
		t.Fatalf("--metrics-listen on %q, --listen on %q: want two listeners", maddr, d.addr)
	}
	base := openFDs(pid)

	fl := startFlood(t, d.addr, conns)
	within(t, "/healthz on the API socket, as root", time.Second, rootHealthz(d))
	within(t, "supervisor health (the probe)", time.Second, probeHealth(d, time.Second))
	within(t, "/healthz on --metrics-listen", time.Second, tcpHealthz(maddr, ""))
	t.Logf("flood of %d connections up: the daemon holds %d descriptors (%d before)", conns, openFDs(pid), base)

	a := startAgent(t, name)
	m := d.waitLog(t, age+30*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	checkKill(t, m, a, age)
	if m["msg"] != "kill" || m["outcome"] != "terminated" {
		t.Errorf("kill of the agent started during the flood: %v", m)
	}
	// The connections never reach into the half of the descriptors the
	// reaper keeps for kills (reap.Pins: pidfds at match below limit/2).
	if n := openFDs(pid); n < 0 || n >= limit/2 {
		t.Errorf("the daemon holds %d descriptors under the flood, want fewer than %d", n, limit/2)
	}
	within(t, "after the kill: /healthz on the API socket", time.Second, rootHealthz(d))
	within(t, "after the kill: supervisor health", time.Second, probeHealth(d, time.Second))
	within(t, "after the kill: /healthz on --metrics-listen", time.Second, tcpHealthz(maddr, ""))
	floodGoesOn(t, fl)
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_connections"}`); got == 0 {
		t.Errorf("no TCP connection refused past the cap: the flood did not reach it")
	} else {
		t.Logf("TCP connections refused past the cap: %.0f", got)
	}
	if got := metricValue(t, d, `supervisor_http_connections{listener="listen"}`); got > tcpMaxConns {
		t.Errorf("%.0f connections open on --listen, want at most %d", got, tcpMaxConns)
	}
}

// One address cannot take a listener that is not on loopback (the node's
// metrics listener, which every pod reaches): an unprivileged user floods
// it from 127.0.0.2 with 200 keep-alive connections, and a fresh
// connection from 127.0.0.3 is still answered. (Before, one client held
// every slot and the listener refused everyone else.)
func TestIntegrationHostileHTTPFloodPerAddress(t *testing.T) {
	needRoot(t)
	// Linux routes all of 127/8 to lo, so the two clients are two
	// addresses on one machine; the listener is on the node's address
	// (reached from 127.0.0.x over lo too), or on every address when the
	// machine has no other.
	ip := nodeIP(t)
	listen := net.JoinHostPort(ip, "0")
	if net.ParseIP(ip).IsLoopback() {
		listen = "0.0.0.0:0"
	}
	d := startDaemon(t, "--max-age", "1h", "--metrics-listen", listen)
	ml := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := ml["metrics_listen"].(string)
	host, port, _ := net.SplitHostPort(maddr)
	target := maddr
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		target = net.JoinHostPort("127.0.0.1", port)
	}
	fl := startFlood(t, target, 200, "127.0.0.2")
	within(t, "/healthz on the metrics listener from 127.0.0.3", time.Second, tcpHealthz(target, "127.0.0.3"))
	floodGoesOn(t, fl)
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_per_ip"}`); got == 0 {
		t.Errorf("no connection from 127.0.0.2 refused past the per-address cap: the flood did not reach it")
	}
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="tcp_connections"}`); got != 0 {
		t.Errorf("%.0f connections refused past the listener's cap: one address filled it", got)
	}
	if got := metricValue(t, d, `supervisor_http_connections{listener="metrics_listen"}`); got > tcpConnsPerIP+3 {
		t.Errorf("%.0f connections open on the metrics listener, want about %d (the flood's share) at most", got, tcpConnsPerIP)
	}
}

// An unprivileged user cannot read /agents or /events: the API socket's
// file refuses it at connect(2); with the file's mode loosened the peer
// check answers 403; the TCP listener has neither endpoint (404).
// Before, any local user read every agent's command line over TCP.
func TestIntegrationHostileAPIRefused(t *testing.T) {
	if ranApart(t) {
		return
	}
	name := testutil.RandName("sec")
	secret := testutil.RandName("token-")
	sock := filepath.Join(apiDir(t), "api.sock")
	d := startDaemon(t, "--max-age", "1h", "--agent", name, "--api-socket", sock)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("API socket %v %v: want mode 0600 without a control group", fi, err)
	}
	a := startAgent(t, name, "-label", secret) // its command line holds a secret
	d.waitTracked(t, a.pid)
	var root []agentView
	d.get(t, "/agents", &root)
	if len(root) != 1 || !strings.Contains(root[0].Cmdline, secret) {
		t.Fatalf("root's /agents: %+v, want the agent with its command line", root)
	}

	nobody := fmt.Sprintf("%d:%d", nobodyUID, nobodyGID)
	check := func(what, target, path string, want func(code int, out string) bool) {
		t.Helper()
		code, out := hostileGetAs(t, nobody, target, path)
		if !want(code, out) || strings.Contains(out, secret) {
			t.Errorf("nobody GET %s %s (%s): %q", target, path, what, out)
		}
	}
	for _, path := range []string{"/agents", "/events", "/healthz"} {
		check("the socket's mode", "unix:"+sock, path, func(code int, out string) bool {
			return code == 0 && strings.Contains(out, "permission denied")
		})
	}
	// The peer check alone.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/agents", "/events", "/healthz"} {
		check("the peer check", "unix:"+sock, path, func(code int, out string) bool {
			return code == http.StatusForbidden && strings.Contains(out, "the API socket is for root") && strings.Contains(out, "uid 65534")
		})
	}
	refused := d.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "api socket: request refused")
	})
	if num(refused["uid"]) != nobodyUID {
		t.Errorf("refusal logged as %v, want uid %d", refused, nobodyUID)
	}
	// TCP: /healthz for anyone, never the processes.
	for _, path := range []string{"/agents", "/events"} {
		check("TCP", "tcp:"+d.addr, path, func(code int, out string) bool {
			return code == http.StatusNotFound && strings.Contains(out, "--api-socket")
		})
	}
	check("TCP", "tcp:"+d.addr, "/healthz", func(code int, _ string) bool { return code == http.StatusOK })
	// And root still reads it all.
	if v := d.agentsFor(t, a.pid); len(v) != 1 {
		t.Errorf("root's /agents after the refusals: %+v", v)
	}
}

// Members of --control-group may read the API socket, but together they
// cannot take root's /events stream: at most a few streams per user and a
// bounded share of the connections. Ten users in the group ask for six
// streams each; then root opens eight. Before, anyone could hold all 64
// /events slots over TCP.
func TestIntegrationHostileAPIStreamLimit(t *testing.T) {
	if ranApart(t) {
		return
	}
	g, err := user.LookupGroup("users")
	if err != nil {
		t.Fatal("the group users is needed: ", err)
	}
	// The daemon makes the socket's directory 0710 and the socket 0660,
	// both in the group: members get in by the file modes, not by chmod.
	sock := filepath.Join(apiDir(t), "run", "api.sock")
	d := startDaemon(t, "--max-age", "1h", "--api-socket", sock, "--control-group", "users", "--summary-interval", "1s")
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("API socket %v %v: want mode 0660 with a control group", fi, err)
	}
	const users, each = 10, 6
	var helpers []*agent
	for i := range users {
		helpers = append(helpers, startHostile(t, fmt.Sprintf("%d:%d:%s", 60100+i, nobodyGID, g.Gid), "streams", sock, strconv.Itoa(each)))
	}
	total := 0
	for i, h := range helpers {
		l := h.waitLine(t, "streams ", 60*time.Second)
		n, _ := strconv.Atoi(strings.TrimPrefix(l, "streams "))
		if n > apiStreamsPerUID {
			t.Errorf("uid %d holds %d /events streams, want at most %d", 60100+i, n, apiStreamsPerUID)
		}
		total += n
	}
	if total == 0 || total > apiGroupConns {
		t.Errorf("the group's members hold %d streams in all, want between 1 and %d", total, apiGroupConns)
	}
	t.Logf("%d members hold %d streams", users, total)
	for i := range 8 {
		s := openEvents(t, d, "?types=snapshot")
		if m := s.next(t, 30*time.Second); m["type"] != "snapshot" {
			t.Errorf("root's stream %d: %v", i, m)
		}
	}
	if got := metricValue(t, d, `supervisor_http_refused_total{reason="api_streams"}`); got == 0 {
		t.Errorf("no stream refused to the members")
	}
}

// PID@START: a control command that names a process with a start time it
// does not have is refused and changes nothing; with the start /agents
// shows, it works. kill --force, which can name any process, too. A stale
// START is simulated: the PID is the same live process, named with its
// start moved by an hour or a second, which is what the daemon sees when
// the PID was reused meanwhile (it compares the live process's start); no
// PID is actually reused here.
func TestIntegrationHostilePIDStart(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	d := startDaemon(t, "--max-age", "1h", "--kill-grace", "1s", "--control-socket", sock)
	a := startAgent(t, "claude")
	d.waitTracked(t, a.pid)
	// The start exactly as /agents shows it.
	var raw []map[string]any
	d.get(t, "/agents", &raw)
	start := ""
	for _, m := range raw {
		if int(num(m["pid"])) == a.pid {
			start, _ = m["started_at"].(string)
		}
	}
	st, err := time.Parse(time.RFC3339Nano, start)
	if err != nil {
		t.Fatalf("started_at %q in /agents: %v", start, err)
	}
	id := func(t0 time.Time) string { return fmt.Sprintf("%d@%s", a.pid, t0.Format(time.RFC3339Nano)) }
	stale := []string{id(st.Add(-time.Hour)), id(st.Add(2 * time.Second)), id(st.Add(-time.Second))}
	for _, s := range stale {
		for _, args := range [][]string{{"extend", s, "30m"}, {"keep", s}, {"kill", s}, {"kill", s, "--force"}} {
			if _, errs, code := ctl(t, sock, args...); code != 1 || !strings.Contains(errs, "refused") || !strings.Contains(errs, "started at") {
				t.Errorf("supervisor %s: exit %d %q, want refused for another start", strings.Join(args, " "), code, errs)
			}
		}
	}
	if _, errs, code := ctl(t, sock, "extend", fmt.Sprintf("%d@yesterday", a.pid), "30m"); code != 2 || !strings.Contains(errs, "START") {
		t.Errorf("a START that is no time: exit %d %q, want a usage error", code, errs)
	}
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft > 3600 || !a.alive() {
		t.Fatalf("after refused commands: %+v alive %v, want the agent untouched", v, a.alive())
	}
	// The very string /agents shows, not id(st).
	out := mustCtl(t, sock, "extend", fmt.Sprintf("%d@%s", a.pid, start), "30m")
	if v := d.agentsFor(t, a.pid); len(v) != 1 || v[0].SecondsLeft < 3600+1700 {
		t.Errorf("extend %d@%s: %q, /agents %+v, want 30 more minutes", a.pid, start, out, v)
	}

	// kill --force of a process that is no agent, named with the start
	// /proc gives (as ps does): a stale one is refused, the right one kills.
	other := startAgent(t, testutil.RandName("idle"))
	other.waitLine(t, "pid ", 10*time.Second)
	procfs, err := tracker.NewProcFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	info, err := procfs.Stat(int32(other.pid))
	if err != nil {
		t.Fatal(err)
	}
	ost := tracker.Time(info.Start.NS, boottime())
	oid := func(t0 time.Time) string { return fmt.Sprintf("%d@%s", other.pid, t0.Format(time.RFC3339Nano)) }
	if _, errs, code := ctl(t, sock, "kill", oid(ost.Add(-time.Minute)), "--force"); code != 1 || !strings.Contains(errs, "refused") {
		t.Errorf("kill --force with a stale start: exit %d %q, want refused", code, errs)
	}
	if !other.alive() {
		t.Fatal("killed with a stale start")
	}
	mustCtl(t, sock, "kill", oid(ost), "--force")
	other.waitExit(t, 20*time.Second)

	// The agent itself, by the start /agents shows.
	mustCtl(t, sock, "kill", fmt.Sprintf("%d@%s", a.pid, start))
	m := d.waitLog(t, 20*time.Second, killOf(a.pid))
	a.waitExit(t, 10*time.Second)
	if m["reason"] != "manual" {
		t.Errorf("kill %d@%s: %v, want reason manual", a.pid, start, m)
	}
}

// A keep-alive connection to a TCP listener is let go after
// tcpConnRequests requests: the last answer says Connection: close and the
// daemon closes it. (Before, a client sending a request before each idle
// timeout held its connection for good.)
func TestIntegrationHostileHTTPConnectionLifetime(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--max-age", "1h")
	c, err := net.DialTimeout("tcp", d.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	for i := 1; i <= tcpConnRequests; i++ {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("answer %d: %s", i, resp.Status)
		}
		if resp.Close != (i == tcpConnRequests) {
			t.Fatalf("answer %d: Connection: close %v, want it on answer %d only", i, resp.Close, tcpConnRequests)
		}
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after answer %d: read %v %v, want the daemon to close the connection", tcpConnRequests, n, err)
	}
}
