package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroups for tests: real cgroup v2 directories named like a container
// runtime's, created under the unified hierarchy and removed afterwards.

// cgroupV2Root returns where the unified hierarchy is mounted: /sys/fs/cgroup
// on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
func cgroupV2Root(t testing.TB) string {
	t.Helper()
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	failOrSkip(t, "needs a cgroup v2 (unified) hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	return ""
}

// hex64 returns a 64-hex container ID unique to this run: the test
// process's PID, then random digits.
func hex64() string {
	var b [28]byte
	rand.Read(b[:])
	return fmt.Sprintf("%08x", os.Getpid()) + hex.EncodeToString(b[:])
}

// podUID returns a random pod UID (a version 4 UUID).
func podUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// makeCgroup creates the cgroup rel ("system.slice/docker-<id>.scope")
// under the unified hierarchy and returns its directory. At cleanup
// (after the test's processes are killed: register it before starting
// them) whatever is left in it is killed through cgroup.kill, which
// reaches only processes in this cgroup, which only the test put there;
// then the directories this call created are removed, deepest first. A
// parent that existed already (system.slice) is left alone, and one this
// call created (kubepods.slice) is removed only when nothing else is in it
// (rmdir refuses a cgroup with children or processes).
func makeCgroup(t testing.TB, rel string) string {
	t.Helper()
	root := cgroupV2Root(t)
	var created []string
	var err error
	for try := 0; try < 10; try++ {
		created, err = mkdirs(root, rel)
		// ENOENT: a parent another test had created was removed under
		// us; make it again.
		if !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		rmdirs(created)
		t.Fatalf("create cgroup %s under %s: %v", rel, root, err)
	}
	leaf := filepath.Join(root, rel)
	t.Cleanup(func() {
		if len(created) == 0 || created[len(created)-1] != leaf {
			return // the leaf existed already: not ours to remove
		}
		if err := emptyCgroup(leaf); err != nil {
			t.Errorf("cgroup %s: %v", leaf, err)
		}
		if err := rmdirs(created); err != nil {
			t.Errorf("remove cgroup %s: %v", leaf, err)
		}
	})
	return leaf
}

// mkdirs makes every missing directory of rel under root, returning those
// it made, shallowest first.
func mkdirs(root, rel string) ([]string, error) {
	var created []string
	dir := root
	for _, c := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, c)
		switch err := unix.Mkdir(dir, 0o755); {
		case err == nil:
			created = append(created, dir)
		case errors.Is(err, unix.EEXIST):
		default:
			return created, fmt.Errorf("mkdir %s: %w", dir, err)
		}
	}
	return created, nil
}

// rmdirs removes dirs deepest first. The leaf must go; a parent that is
// still in use (EBUSY, ENOTEMPTY: another test's cgroup below it) stays.
func rmdirs(dirs []string) error {
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 100; try++ {
			// EBUSY right after the last process left: the kernel has
			// not finished taking the cgroup's css offline yet.
			if err = unix.Rmdir(dirs[i]); !errors.Is(err, unix.EBUSY) || i < len(dirs)-1 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
		case i < len(dirs)-1 && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY)):
			return nil // shared and in use: leave it and what is above it
		default:
			return fmt.Errorf("rmdir %s: %w", dirs[i], err)
		}
	}
	return nil
}

// emptyCgroup kills what is left in the test's cgroup dir (cgroup.kill,
// Linux 5.14) and waits until cgroup.events says it is empty.
func emptyCgroup(dir string) error {
	populated := func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		return strings.Contains(string(b), "populated 1")
	}
	if !populated() {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("cgroup.kill: %w", err)
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !populated() {
			return nil
		}
	}
	return errors.New("still populated 10s after cgroup.kill")
}

// cgroupPath is the cgroup v2 path of dir as /proc/PID/cgroup shows it.
func cgroupPath(t testing.TB, dir string) string {
	t.Helper()
	rel, err := filepath.Rel(cgroupV2Root(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	return "/" + rel
}
