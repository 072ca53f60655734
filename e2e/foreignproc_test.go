package e2e

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// In a new PID namespace whose /proc is still the host's (unshare --pid
// without --mount-proc), PIDs in /proc name other processes than the same
// PIDs do for us: `run` refuses to start, naming the cause, and `init`
// keeps being CMD's init without the supervisor (CMD's status comes back),
// so nothing is ever matched or signalled by a foreign PID.
func TestIntegrationForeignProcRefused(t *testing.T) {
	if ranApart(t) {
		return
	}
	needUnshare(t)
	dir := t.TempDir()
	// Without the check `run` would scan the host's processes and run on:
	// the deadline turns that into a failure, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := []string{"--dry-run", "--listen", "", "--control-socket", "", "--state-dir", dir, "--agent", "foreign-agent"}

	out, err := exec.CommandContext(ctx, "unshare", append([]string{"--pid", "--fork", supervisorBin, "run"}, common...)...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "belongs to another PID namespace") {
		t.Errorf("run with a foreign /proc: %v\n%s\nwant exit 1 naming the foreign /proc", err, out)
	}

	out, err = exec.CommandContext(ctx, "unshare", append(append([]string{"--pid", "--fork", supervisorBin, "init"}, common...), "--", "sh", "-c", "exit 4")...).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("init with a foreign /proc: %v, want CMD's status 4\n%s", err, out)
	}
	if !strings.Contains(string(out), "belongs to another PID namespace") || strings.Contains(string(out), `"msg":"initial scan"`) {
		t.Errorf("init with a foreign /proc scanned it, or did not say why it did not:\n%s", out)
	}
}
