package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// limitedCgroup makes a memory-limited cgroup (1 GiB: a limit, not
// pressure) and returns the cgroup.procs files a process writes itself
// into to join it, and the memory.pressure file the daemon should choose
// when its sessions share that limit. On a hybrid host that is a v1
// memory cgroup plus a unified-hierarchy group of the same name, as
// systemd makes for a unit with MemoryMax=. Removed at cleanup.
func limitedCgroup(t *testing.T) (procs []string, pressure string) {
	t.Helper()
	name := fmt.Sprintf("psi-file-%d", os.Getpid())
	var dirs []string
	mk := func(dir string) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				err := os.Remove(d)
				if err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(end) {
					t.Errorf("cgroup %s not removed: %v", d, err)
					break
				}
			}
		}
	})
	const limit = "1073741824"
	switch {
	case cgFileExists("/sys/fs/cgroup/cgroup.controllers"):
		dir := filepath.Join("/sys/fs/cgroup", name)
		mk(dir)
		if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(limit), 0); err != nil {
			msg := fmt.Sprintf("no memory controller for the root's children (%v)", err)
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		return procs, filepath.Join(dir, "memory.pressure")
	case cgFileExists("/sys/fs/cgroup/memory/memory.limit_in_bytes") && cgFileExists("/sys/fs/cgroup/unified/cgroup.controllers"):
		v1 := filepath.Join("/sys/fs/cgroup/memory", name)
		mk(v1)
		if err := os.WriteFile(filepath.Join(v1, "memory.limit_in_bytes"), []byte(limit), 0); err != nil {
			t.Fatal(err)
		}
		unified := filepath.Join("/sys/fs/cgroup/unified", name)
		mk(unified)
		return procs, filepath.Join(unified, "memory.pressure")
	}
	msg := "no memory cgroup under /sys/fs/cgroup (neither v2 nor v1 memory with a unified hierarchy)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return nil, ""
}

func cgFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// registered runs the daemon (args after the binary) in the cgroups whose
// procs files are given (a shell joins them, then execs it) and returns its
// "memory pressure trigger registered" line. The daemon is ended at once
// (init: its command is a short sleep; run: killed).
func registered(t *testing.T, procs []string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	script := `for f in $JOIN; do echo $$ > "$f" || exit 1; done; exec "$@"`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "sh", supervisorBin}, args...)...)
	join := ""
	for _, p := range procs {
		join += p + " "
	}
	cmd.Env = append(os.Environ(), "JOIN="+join)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill() // our child, not yet reaped
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "memory pressure trigger registered" {
			return m
		}
	}
	t.Fatalf("no \"memory pressure trigger registered\" line:\n%s", lines)
	return nil
}

// TestIntegrationPressureFile: in a memory-limited cgroup, `supervisor init`
// (its command shares the limit) watches that cgroup's memory.pressure,
// while `supervisor run` there (a unit's MemoryMax=, a pod's limit: the
// daemon alone) watches /proc/pressure/memory; --pressure-file overrides
// both.
func TestIntegrationPressureFile(t *testing.T) {
	needRoot(t)
	needPSI(t)
	procs, want := limitedCgroup(t)
	common := []string{"--pressure", "some 200ms 2s", "--under", strconv.Itoa(os.Getpid()), "--listen", "", "--control-socket", ""}

	m := registered(t, procs, append(append([]string{"init", "--state-dir", t.TempDir()}, common...), "--", "sleep", "2")...)
	if m["file"] != want || m["shared_with_sessions"] != true {
		t.Errorf("init in a limited cgroup: file %v (shared %v, why %q); want %s", m["file"], m["shared_with_sessions"], m["why"], want)
	}
	t.Logf("init: %v (%v)", m["file"], m["why"])

	m = registered(t, procs, append([]string{"run", "--state-dir", t.TempDir()}, common...)...)
	if m["file"] != "/proc/pressure/memory" || m["shared_with_sessions"] != false || m["cgroup_limit_bytes"] != float64(1<<30) {
		t.Errorf("run in a limited cgroup: file %v (shared %v, limit %v, why %q); want /proc/pressure/memory", m["file"], m["shared_with_sessions"], m["cgroup_limit_bytes"], m["why"])
	}
	t.Logf("run: %v (%v)", m["file"], m["why"])

	m = registered(t, procs, append([]string{"run", "--state-dir", t.TempDir(), "--pressure-file", want}, common...)...)
	if m["file"] != want || m["why"] != "--pressure-file" {
		t.Errorf("run with --pressure-file %s: file %v, why %q", want, m["file"], m["why"])
	}
}
