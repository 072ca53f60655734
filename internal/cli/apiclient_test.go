package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/testutil"
)

// fakeAPI serves handler on a unix socket in a fresh directory and returns
// its path.
func fakeAPI(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func runHealth(args ...string) (int, string, string) {
	var out, errs bytes.Buffer
	code := Health(args, func(string) string { return "" }, &out, &errs)
	return code, out.String(), errs.String()
}

// supervisor health: 0 on 200 with the JSON printed, 1 on any other answer
// or none, 2 on usage errors.
func TestHealthCmd(t *testing.T) {
	ok := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(api.HealthView{Status: "ok", Source: "netlink"})
	})
	code, out, errs := runHealth("--api-socket", ok)
	var h api.HealthView
	if code != 0 || json.Unmarshal([]byte(out), &h) != nil || h.Status != "ok" || errs != "" {
		t.Errorf("ready daemon: exit %d, stdout %q, stderr %q; want 0 and its JSON", code, out, errs)
	}
	// Found beside the control socket, as status finds it.
	if code, _, _ := runHealth("--control-socket", filepath.Join(filepath.Dir(ok), "control.sock")); code != 0 {
		t.Errorf("--control-socket beside the API socket: exit %d", code)
	}

	starting := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(api.HealthView{Status: "starting"})
	})
	code, out, errs = runHealth("--api-socket", starting)
	if code != 1 || !strings.Contains(out, `"starting"`) || !strings.Contains(errs, "not ready") || !strings.Contains(errs, "starting") {
		t.Errorf("starting daemon: exit %d, stdout %q, stderr %q; want 1, its JSON, and why", code, out, errs)
	}

	forbidden := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden: the API socket is for root (you are uid 65534)", http.StatusForbidden)
	})
	if code, _, errs := runHealth("--api-socket", forbidden); code != 1 || !strings.Contains(errs, "403") || !strings.Contains(errs, "uid 65534") {
		t.Errorf("refused: exit %d, stderr %q; want 1 and the daemon's words", code, errs)
	}

	// Nothing listens: a clear message, exit 1.
	none := filepath.Join(t.TempDir(), "api.sock")
	if code, out, errs := runHealth("--api-socket", none); code != 1 || out != "" || !strings.Contains(errs, "no daemon answers on "+none) {
		t.Errorf("no daemon: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// A daemon that takes the connection and never answers: the timeout.
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testutil.Accept(ln, nil)
	t0 := time.Now()
	code, _, errs = runHealth("--api-socket", ln.Addr().String(), "--timeout", "300ms")
	if code != 1 || !strings.Contains(errs, "no answer") || !strings.Contains(errs, "300ms") {
		t.Errorf("silent daemon: exit %d, stderr %q; want 1 and no answer within 300ms", code, errs)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("silent daemon: gave up after %s, want about 300ms", took)
	}

	for _, args := range [][]string{{"extra"}, {"--timeout", "0s"}, {"--timeout", "soon"}, {"--nope"}, {"--api-socket", ""}} {
		if code, _, errs := runHealth(args...); code != 2 || errs == "" {
			t.Errorf("health %q: exit %d stderr %q, want a usage error (2)", args, code, errs)
		}
	}
	if code, out, _ := runHealth("--help"); code != 0 || !strings.Contains(out, "usage: supervisor health") {
		t.Errorf("health --help: exit %d %q", code, out)
	}
}
