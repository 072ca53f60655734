package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDeployProbeCommand runs the DaemonSet's probe command (an exec of
// supervisor health) through the supervisor binary: it must
// parse, say "no daemon" (exit 1) when nothing listens on the socket it
// names, and answer 0 from a ready daemon on that socket. (The deploy
// module's test checks the socket is the daemon's and the binary the
// image's.)
func TestDeployProbeCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", "30-daemonset.yaml"))
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
		// As the kubelet runs it: nothing from this environment.
		cmd := exec.Command(supervisorBin, args...)
		cmd.Env = []string{}
		var out, errs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errs
		err := cmd.Run()
		if _, exited := err.(*exec.ExitError); err != nil && !exited {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errs.String()
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
