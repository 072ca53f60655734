package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// nodeIP returns a non-loopback IPv4 address of this machine, as a node's
// status.hostIP would be, or 127.0.0.1 when there is none.
func nodeIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Log("no non-loopback IPv4 address: --metrics-listen is tested on 127.0.0.1")
	return "127.0.0.1"
}

// getHost GETs path from addr with the given Host header.
func getHost(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsListen: --metrics-listen on the node's address serves /metrics
// and /healthz to a scraper that names that address (as Prometheus does
// with a hostNetwork pod's IP), and nothing that shows processes; the
// loopback listener answers the kubelet's probe (httpGet.host 127.0.0.1)
// and shows no processes either.
func TestMetricsListen(t *testing.T) {
	if ranApart(t) {
		return
	}
	ip := nodeIP(t)
	d := startDaemon(t, "--metrics-listen", net.JoinHostPort(ip, "0"))
	m := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := m["metrics_listen"].(string)
	if host, _, _ := net.SplitHostPort(maddr); host != ip {
		t.Fatalf("metrics listener on %q, want on %s", maddr, ip)
	}

	code, body := getHost(t, maddr, maddr, "/metrics")
	if code != 200 || !strings.Contains(body, "supervisor_events_total") || !strings.Contains(body, "supervisor_kills_total") {
		t.Errorf("GET /metrics on --metrics-listen: %d, %.200q", code, body)
	}
	if code, body := getHost(t, maddr, maddr, "/healthz"); code != 200 || !strings.Contains(body, `"status": "ok"`) {
		t.Errorf("GET /healthz on --metrics-listen: %d %.200q", code, body)
	}
	for _, p := range []string{"/agents", "/events", "/"} {
		if code, body := getHost(t, maddr, maddr, p); code != http.StatusNotFound {
			t.Errorf("GET %s on --metrics-listen: %d %.200q, want 404 (it shows processes)", p, code, body)
		}
	}
	if code, _ := getHost(t, maddr, "rebind.example", "/metrics"); code != http.StatusForbidden {
		t.Errorf("GET /metrics on --metrics-listen with a foreign Host: %d, want 403", code)
	}
	// The kubelet's probe with hostNetwork: httpGet.host 127.0.0.1 sends
	// that address as the Host.
	if code, body := getHost(t, d.addr, d.addr, "/healthz"); code != 200 {
		t.Errorf("probe of --listen %s: %d %.200q", d.addr, code, body)
	}
	if code, _ := getHost(t, d.addr, d.addr, "/agents"); code != http.StatusNotFound {
		t.Errorf("GET /agents on --listen: %d, want 404 (it is on the API socket)", code)
	}
}

// TestMetricsListenAlone: with --listen empty the metrics listener still
// serves, and stops cleanly with the daemon.
func TestMetricsListenAlone(t *testing.T) {
	if ranApart(t) {
		return
	}
	d := startDaemon(t, "--listen", "", "--metrics-listen", "127.0.0.1:0")
	m := d.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["metrics_listen"] != nil })
	maddr, _ := m["metrics_listen"].(string)
	if code, body := getHost(t, maddr, maddr, "/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d %.200q", code, body)
	}
	d.stop(t)
	if d.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("daemon exit status %d, want 0", d.cmd.ProcessState.ExitCode())
	}
	if _, err := net.DialTimeout("tcp", maddr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after the daemon stopped", maddr)
	}
}
