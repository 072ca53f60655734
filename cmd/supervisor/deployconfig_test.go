package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDeployConfigMap runs the Kubernetes ConfigMap's supervisor.conf
// through the daemon's own parser, with the environment the DaemonSet sets:
// a value the daemon refuses would make every pod exit 2 at start. (The
// deploy module's test decodes the manifests against the API types; only
// this module has the parser.)
func TestDeployConfigMap(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "20-configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The literal block under "supervisor.conf: |", indented by 4 spaces.
	var conf []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.TrimSpace(line) == "supervisor.conf: |":
			in = true
		case in && (strings.HasPrefix(line, "    ") || strings.TrimSpace(line) == ""):
			conf = append(conf, strings.TrimPrefix(line, "    "))
		case in:
			in = false
		}
	}
	if len(conf) == 0 {
		t.Fatal("no supervisor.conf block in 20-configmap.yaml")
	}
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "database-url")
	os.WriteFile(urlFile, []byte("postgres://supervisor@db.example/supervisor\n"), 0o600)
	text := strings.Join(conf, "\n")
	const mounted = "DATABASE_URL_FILE=/etc/agent-supervisor/database/database-url"
	if !strings.Contains(text, mounted) {
		t.Fatalf("the ConfigMap does not read the Secret's file (%s):\n%s", mounted, text)
	}
	text = strings.Replace(text, mounted, "DATABASE_URL_FILE="+urlFile, 1)
	f := filepath.Join(dir, "supervisor.conf")
	os.WriteFile(f, []byte(text), 0o600)
	// What the DaemonSet's env adds (deploy/kubernetes/30-daemonset.yaml).
	c, err := parseConfig("run", nil, env("REAPER_CONFIG", f, "REAPER_HOST_ID", "node-a",
		"REAPER_METRICS_LISTEN", "[10.0.0.1]:9848"), io.Discard)
	if err != nil {
		t.Fatalf("the daemon refuses the ConfigMap: %v\n%s", err, text)
	}
	if len(c.Under) != 1 || c.Under[0].String() != "cgroup:/kubepods*" {
		t.Errorf("under %v, want cgroup:/kubepods*", c.Under)
	}
	if c.DatabaseURLFile != urlFile || c.HostID != "node-a" || c.MetricsListen != "[10.0.0.1]:9848" || c.DryRun {
		t.Errorf("config %+v", c)
	}
}

// TestDeployProbeCommand runs the DaemonSet's probe command (an exec of
// supervisor health) through this binary's own command line: it must
// parse, say "no daemon" (exit 1) when nothing listens on the socket it
// names, and answer 0 from a ready daemon on that socket. (The deploy
// module's test checks the socket is the daemon's and the binary the
// image's.)
func TestDeployProbeCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "30-daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The probes' flow sequences, `command: ["...", ...]`, are JSON.
	var cmds [][]string
	for _, m := range regexp.MustCompile(`(?m)^\s+command:\s*(\[.*\])\s*$`).FindAllStringSubmatch(string(b), -1) {
		var c []string
		if err := json.Unmarshal([]byte(m[1]), &c); err != nil {
			t.Fatalf("probe command %s: %v", m[1], err)
		}
		cmds = append(cmds, c)
	}
	if len(cmds) != 2 {
		t.Fatalf("found %d exec probe commands in 30-daemonset.yaml, want 2 (liveness, readiness) as `command: [...]`", len(cmds))
	}
	// with runs the command's arguments with its socket replaced by sock.
	with := func(c []string, sock string) (int, string, string) {
		args := slices.Clone(c[1:])
		i := slices.Index(args, "--api-socket")
		if i < 0 || i+1 >= len(args) || args[0] != "health" {
			t.Fatalf("probe command %q: want supervisor health --api-socket PATH ...", c)
		}
		args[i+1] = sock
		var out, errs bytes.Buffer
		code := mainErr(args, env(), &out, &errs)
		return code, out.String(), errs.String()
	}
	none := filepath.Join(t.TempDir(), "api.sock")
	for _, c := range cmds {
		if filepath.Base(c[0]) != "supervisor" {
			t.Errorf("probe command %q: want the supervisor binary", c)
		}
		if code, _, errs := with(c, none); code != 1 || !strings.Contains(errs, "no daemon answers on "+none) {
			t.Errorf("probe %q with no daemon: exit %d %q, want 1 and no daemon", c, code, errs)
		}
	}
	needRoot(t)
	d := startDaemon(t, "--max-age", "1h")
	for _, c := range cmds {
		code, out, errs := with(c, d.api)
		var h healthView
		if code != 0 || json.Unmarshal([]byte(out), &h) != nil || h.Status != "ok" {
			t.Errorf("probe %q on a ready daemon: exit %d, stdout %q, stderr %q; want 0 and its /healthz", c, code, out, errs)
		}
	}
}
