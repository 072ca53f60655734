package main

import (
	"io"
	"os"
	"path/filepath"
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
