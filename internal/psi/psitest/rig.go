//go:build linux

package psitest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options shape the rig. The zero value is the measured recipe: 20 MiB
// limit, a 30 MiB file, two readers.
type Options struct {
	LimitMiB, FileMiB, Readers int
}

// Rig is a running pressure rig.
type Rig struct {
	Cgroup string // the cgroup directory
	V2     bool   // a cgroup v2 group (else v1 memory controller)
	cmd    *exec.Cmd
	file   string
}

var seq atomic.Int64

// Start makes the cgroup and starts the readers in it; t.Cleanup kills
// them (their own process group, led by a child this test has not yet
// reaped, so the group id cannot have been reused), deletes the file and
// removes the cgroup. It skips (fails under CI) when not root or when the
// host has no memory cgroup.
func Start(t testing.TB, o Options) *Rig {
	t.Helper()
	if o.LimitMiB == 0 {
		o.LimitMiB = 20
	}
	if o.FileMiB == 0 {
		o.FileMiB = 30
	}
	if o.Readers == 0 {
		o.Readers = 2
	}
	if _, err := os.Stat("/proc/pressure/memory"); err != nil {
		skip(t, "pressure rig: no /proc/pressure/memory (kernel without PSI): %v", err)
	}
	r := &Rig{}
	r.Cgroup, r.V2 = Group(t, fmt.Sprintf("psi-rig-%d-%d", os.Getpid(), seq.Add(1)), o.LimitMiB)
	r.file = filepath.Join(dataDir(t), "pressure.dat")
	t.Cleanup(func() { os.Remove(r.file) }) // frees its page cache; runs before the cgroup's removal
	// The shell joins the cgroup before it writes the file, so the file's
	// page cache is charged there (pages cached before a process joins
	// stay charged where they were and cause no pressure).
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs || exit 1
dd if=/dev/urandom of=%s bs=1M count=%d status=none || exit 1
i=0; while [ $i -lt %d ]; do (while :; do cat %s > /dev/null; done) & i=$((i+1)); done
wait`, r.Cgroup, r.file, o.FileMiB, o.Readers, r.file)
	r.cmd = exec.Command("/bin/sh", "-c", script)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("pressure rig: start readers: %v", err)
	}
	t.Cleanup(r.stop) // runs before removeCgroup (cleanups run last first)
	return r
}

// Group makes the memory cgroup name with a limit of limitMiB and returns
// its directory: on cgroup v2 (v2 true) a child of the root, the memory
// controller enabled for the root's children if it was not
// (enableMemory); else a group of the v1 memory controller. t.Cleanup
// removes it (Mkdir). It skips (fails under CI) without root or a memory
// cgroup.
func Group(t testing.TB, name string, limitMiB int) (dir string, v2 bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "psitest: needs root to create a memory cgroup")
	}
	limit := strconv.Itoa(limitMiB << 20)
	switch {
	case exists("/sys/fs/cgroup/cgroup.controllers"):
		// Pure v2: the memory controller must be enabled for the
		// children of the root.
		if err := enableMemory(t, "/sys/fs/cgroup"); err != nil {
			skip(t, "psitest: %v", err)
		}
		dir = filepath.Join("/sys/fs/cgroup", name)
		Mkdir(t, dir)
		write(t, filepath.Join(dir, "memory.max"), limit)
		return dir, true
	case exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
		dir = filepath.Join("/sys/fs/cgroup/memory", name)
		Mkdir(t, dir)
		write(t, filepath.Join(dir, "memory.limit_in_bytes"), limit)
		return dir, false
	}
	skip(t, "psitest: no memory cgroup controller under /sys/fs/cgroup (neither v2 memory.max nor v1 memory/)")
	return "", false
}

// Mkdir makes the cgroup directory dir; t.Cleanup removes it once the
// processes in it are gone, waiting up to 30 s (killed processes' orphans
// are reaped by init, which may take a second or two).
func Mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("psitest: %v", err)
	}
	t.Cleanup(func() {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				t.Errorf("psitest: cgroup %s not removed: %v (procs: %q)", dir, err, strings.TrimSpace(string(b)))
				return
			}
		}
	})
}

// skip skips the test, or fails it under CI, where every test must run.
func skip(t testing.TB, format string, a ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, a...)
	}
	t.Skipf(format, a...)
}

// stop kills the readers' process group and reaps its leader.
func (r *Rig) stop() {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Stop ends the pressure early (the cleanup still removes the cgroup).
func (r *Rig) Stop() { r.stop() }

// Procs lists the PIDs in the rig's cgroup (for asserting they are never
// signalled by the daemon under test).
func (r *Rig) Procs() []int {
	b, _ := os.ReadFile(filepath.Join(r.Cgroup, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// enabled counts this process's rigs that rely on the memory controller
// this package turned on in the root's subtree_control; enabledMu guards
// it and the write.
var (
	enabledMu sync.Mutex
	enabled   int
)

// enableMemory turns on the memory controller for root's children, as
// systemd does on most v2 hosts already. If it had to, a cleanup (which
// runs after the rig's cgroup is removed) turns it off again once this
// process's last rig is done — unless another child of the root has set a
// memory limit meanwhile (a concurrent test run, or the host's own use):
// disabling would silently drop that limit, so it is left on and the test
// log says so.
func enableMemory(t testing.TB, root string) error {
	enabledMu.Lock()
	defer enabledMu.Unlock()
	ctl := filepath.Join(root, "cgroup.subtree_control")
	if enabled > 0 {
		enabled++
		t.Cleanup(func() { disableMemory(t, root) })
		return nil
	}
	b, err := os.ReadFile(ctl)
	if err != nil {
		return err
	}
	for _, c := range strings.Fields(string(b)) {
		if c == "memory" {
			return nil // on already: not ours to turn off
		}
	}
	if err := os.WriteFile(ctl, []byte("+memory"), 0); err != nil {
		return fmt.Errorf("enable the memory controller in %s: %w", ctl, err)
	}
	enabled++
	t.Cleanup(func() { disableMemory(t, root) })
	return nil
}

// disableMemory undoes enableMemory for one rig (see there).
func disableMemory(t testing.TB, root string) {
	enabledMu.Lock()
	defer enabledMu.Unlock()
	if enabled--; enabled > 0 {
		return
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		v, err := os.ReadFile(filepath.Join(root, e.Name(), "memory.max"))
		if err == nil && strings.TrimSpace(string(v)) != "max" {
			t.Logf("pressure rig: leaving the memory controller on in %s/cgroup.subtree_control: %s has a memory limit", root, e.Name())
			return
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("-memory"), 0); err != nil {
		t.Errorf("pressure rig: turn the memory controller it enabled off again in %s/cgroup.subtree_control: %v", root, err)
	}
}

// dataDir is a directory on a disk file system: a file on tmpfs is shmem,
// which without swap cannot be reclaimed and would be OOM-killed instead.
func dataDir(t testing.TB) string {
	for _, d := range []string{t.TempDir(), "/var/tmp"} {
		var st unix.Statfs_t
		if unix.Statfs(d, &st) == nil && st.Type != unix.TMPFS_MAGIC {
			if d == "/var/tmp" {
				var err error
				if d, err = os.MkdirTemp(d, "psi-rig-"); err != nil {
					continue
				}
				t.Cleanup(func() { os.RemoveAll(d) })
			}
			return d
		}
	}
	t.Fatal("pressure rig: no disk-backed directory for the data file (TMPDIR and /var/tmp are tmpfs)")
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func write(t testing.TB, p, v string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		t.Fatalf("pressure rig: write %s: %v", p, err)
	}
}
