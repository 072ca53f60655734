package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary as the sandbox systemd makes of the unit
// (scripts/agent-supervisor.service), for hardening_e2e_test.go: started
// with sandboxEnv set to a sandboxSpec, in a new mount and UTS namespace
// (the test's SysProcAttr), it builds the unit's file system view, drops to
// its capabilities, sets no-new-privileges, the umask and the system call
// filter, and execs the daemon. What each step stands for is in the spec.

// sandboxEnv=JSON: run as the sandbox (sandboxExec).
const sandboxEnv = "SUPERVISOR_TEST_SANDBOX"

func init() {
	if s := os.Getenv(sandboxEnv); s != "" {
		err := sandboxExec(s)
		fmt.Fprintln(os.Stderr, "test sandbox:", err)
		os.Exit(126)
	}
}

// sandboxSpec is what the unit says, as the sandbox applies it.
type sandboxSpec struct {
	// Writable: StateDirectory=, RuntimeDirectory= (here the test's
	// own); everything else is read-only (ProtectSystem=strict,
	// ProtectHome=read-only, ProtectKernelTunables=).
	Writable []string
	// PrivateTmp=: fresh /tmp and /var/tmp.
	PrivateTmp bool
	// PrivateDevices=: a /dev of null, zero, full, random, urandom, tty.
	PrivateDevices bool
	// ProtectProc=invisible: a /proc of its own, hidepid=invisible.
	// ProtectKernelLogs=: /proc/kmsg inaccessible.
	ProtectProc, ProtectKernelLogs bool
	// Caps: CapabilityBoundingSet=, as numbers.
	Caps []int
	// NoNewPrivs: NoNewPrivileges=.
	NoNewPrivs bool
	// Umask: UMask=.
	Umask int
	// Deny: the system calls SystemCallFilter=~ (and the Protect*
	// settings that add to it) make fail with EPERM; Native:
	// SystemCallArchitectures=native; Families: RestrictAddressFamilies=
	// (socket() of any other fails with EAFNOSUPPORT).
	Deny     []int
	Native   bool
	Families []int
}

// sandboxExec applies spec (JSON) and execs os.Args[1:]. It returns only
// on failure. It runs on the main thread, locked during initialisation:
// capabilities and the seccomp filter are the calling thread's, and
// execve passes on that thread's.
func sandboxExec(spec string) error {
	var s sandboxSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return err
	}
	if len(os.Args) < 2 {
		return fmt.Errorf("nothing to exec")
	}
	// The program, opened before /tmp (where the test built it) is
	// replaced: exec'd through /proc/self/fd.
	exe, err := unix.Open(os.Args[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// The writable directories, cloned before their parents are
	// covered, put back after.
	clones := make([]int, len(s.Writable))
	for i, dir := range s.Writable {
		if clones[i], err = unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC); err != nil {
			return fmt.Errorf("open_tree %s: %w", dir, err)
		}
	}
	writable := append([]string(nil), s.Writable...)
	if s.PrivateTmp {
		for _, d := range []string{"/tmp", "/var/tmp"} {
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
				return fmt.Errorf("PrivateTmp %s: %w", d, err)
			}
			writable = append(writable, d)
		}
	}
	if s.PrivateDevices {
		if err := privateDev(); err != nil {
			return fmt.Errorf("PrivateDevices: %w", err)
		}
	}
	if s.ProtectProc {
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible"); err != nil {
			return fmt.Errorf("ProtectProc: %w", err)
		}
	}
	if s.ProtectKernelLogs {
		if !s.PrivateDevices {
			return fmt.Errorf("ProtectKernelLogs: the inaccessible node is made in the private /dev")
		}
		// An inaccessible node over it, as systemd does.
		node := "/dev/.inaccessible"
		if err := os.WriteFile(node, nil, 0); err != nil {
			return fmt.Errorf("ProtectKernelLogs: %w", err)
		}
		if err := unix.Mount(node, "/proc/kmsg", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("ProtectKernelLogs: %w", err)
		}
	}
	for i, dir := range s.Writable {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := unix.MoveMount(clones[i], "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount %s: %w", dir, err)
		}
	}
	// Everything read-only, then the writable ones writable again.
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	for _, dir := range writable {
		if err := unix.MountSetattr(unix.AT_FDCWD, dir, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("writable %s: %w", dir, err)
		}
	}
	if err := boundCaps(s.Caps); err != nil {
		return err
	}
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	unix.Umask(s.Umask)
	if err := seccompDeny(s.Deny, s.Native, s.Families); err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, sandboxEnv+"=") {
			env = append(env, kv)
		}
	}
	return unix.Exec("/proc/self/fd/"+strconv.Itoa(exe), os.Args[1:], env)
}

// privateDev mounts a /dev as PrivateDevices= makes it.
func privateDev() error {
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755"); err != nil {
		return err
	}
	for name, dev := range map[string][2]uint32{"null": {1, 3}, "zero": {1, 5}, "full": {1, 7}, "random": {1, 8}, "urandom": {1, 9}, "tty": {5, 0}} {
		if err := unix.Mknod("/dev/"+name, unix.S_IFCHR|0o666, int(unix.Mkdev(dev[0], dev[1]))); err != nil {
			return err
		}
		if err := os.Chmod("/dev/"+name, 0o666); err != nil { // past the umask
			return err
		}
	}
	for name, to := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(to, "/dev/"+name); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir("/dev/"+d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// boundCaps keeps only caps in the bounding set and drops the others from
// the inheritable and ambient sets: root's permitted set after execve is
// the bounding set (with no-new-privileges, within what it had).
func boundCaps(caps []int) error {
	keep := map[int]bool{}
	for _, c := range caps {
		keep[c] = true
	}
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return err
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for c := 0; c <= last; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
		data[c/32].Inheritable &^= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear the ambient set: %w", err)
	}
	return nil
}

// seccompDeny installs a filter: a system call of another architecture
// (native) or an x32 one, or one in deny, fails with EPERM; socket() of a
// family not in families fails with EAFNOSUPPORT; the rest is allowed.
func seccompDeny(deny []int, native bool, families []int) error {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
		// struct seccomp_data: nr, arch, instruction pointer, args.
		offNr, offArch, offArg0 = 0, 4, 16
	)
	eperm := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	var p []unix.SockFilter
	if native {
		p = append(p,
			unix.SockFilter{Code: ld, K: offArch},
			unix.SockFilter{Code: jeq, Jt: 1, K: unix.AUDIT_ARCH_X86_64},
			unix.SockFilter{Code: ret, K: eperm},
			unix.SockFilter{Code: ld, K: offNr},
			unix.SockFilter{Code: jge, Jf: 1, K: 0x40000000}, // __X32_SYSCALL_BIT
			unix.SockFilter{Code: ret, K: eperm})
	}
	p = append(p, unix.SockFilter{Code: ld, K: offNr})
	for _, nr := range deny {
		p = append(p, unix.SockFilter{Code: jeq, Jf: 1, K: uint32(nr)}, unix.SockFilter{Code: ret, K: eperm})
	}
	if families != nil {
		// socket(family, ...): past the families' checks, refused.
		p = append(p, unix.SockFilter{Code: jeq, Jt: 1, K: unix.SYS_SOCKET}, unix.SockFilter{Code: ret, K: allow},
			unix.SockFilter{Code: ld, K: offArg0})
		for _, f := range families {
			p = append(p, unix.SockFilter{Code: jeq, Jf: 1, K: uint32(f)}, unix.SockFilter{Code: ret, K: allow})
		}
		p = append(p, unix.SockFilter{Code: ret, K: uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT))})
	}
	p = append(p, unix.SockFilter{Code: ret, K: allow})
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("seccomp filter: %w", err)
	}
	return nil
}
