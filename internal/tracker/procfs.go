package tracker

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/agent-supervisor/supervisor/internal/cgroupinfo"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// pfKthread is PF_KTHREAD from include/linux/sched.h, reported in the flags
// field of /proc/PID/stat.
const pfKthread = 0x00200000

// pfExiting is PF_EXITING: set by exit_signals() at the start of do_exit,
// before the exit event is sent and before the task becomes a zombie.
const pfExiting = 0x00000004

// ProcFS reads processes from a procfs mount.
//
// /proc/PID/stat, read for every process at start-up and after lost events
// and on every exec, is parsed here from one read into a reused buffer:
// through prometheus/procfs the start-up scan of 10,000 processes took
// 380 ms (2-core VM), most of it allocation and fmt parsing. Everything
// else (command lines, meminfo, PSI, cgroups) goes through procfs.
type ProcFS struct {
	fs     procfs.FS
	root   string
	mu     sync.Mutex // guards buf, Stat's buffer
	buf    []byte
	envMu  sync.Mutex // guards envBuf, KeepMarked's buffer
	envBuf []byte
	cgns   *cgroupinfo.Namespace // resolves cgroup paths read in a private cgroup namespace (cgroup.go)
}

// NewProcFS opens the procfs mounted at root ("/proc" normally).
func NewProcFS(root string) (*ProcFS, error) {
	f, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open procfs %s: %w", root, err)
	}
	return &ProcFS{fs: f, root: root, buf: make([]byte, 1024)}, nil
}

// CheckOwn reports an error unless this procfs is the one of our own PID
// namespace: /proc/self names us by the PID its namespace gives us. A /proc
// mounted for another namespace (unshare --pid without --mount-proc)
// shows other processes under PIDs that, in ours, belong to someone else:
// matching them, or checking a pidfd's start time there, would aim at the
// wrong process.
func (p *ProcFS) CheckOwn() error {
	self, err := os.Readlink(p.root + "/self")
	if err != nil {
		return fmt.Errorf("read %s/self: %w", p.root, err)
	}
	if self != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("%s belongs to another PID namespace (it calls us %s, we are %d): mount one for ours (e.g. unshare --pid --fork --mount-proc)", p.root, self, os.Getpid())
	}
	return nil
}

// gone maps the errors of a process that exited between listing and reading
// to ErrGone, as node_exporter does.
func gone(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}

// Stat reads /proc/PID/stat.
func (p *ProcFS) Stat(pid int32) (ProcInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stat(strconv.Itoa(int(pid)), p.buf)
}

func (p *ProcFS) stat(pid string, buf []byte) (ProcInfo, error) {
	path := p.root + "/" + pid + "/stat"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ProcInfo{}, gone(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return ProcInfo{}, gone(&fs.PathError{Op: "read", Path: path, Err: err})
	}
	return ParseStat(buf[:n])
}

// ParseStat parses the contents of /proc/PID/stat (proc(5)): the comm is
// whatever lies between the first '(' and the last ')', since it may itself
// hold spaces and parentheses.
func ParseStat(b []byte) (ProcInfo, error) {
	open := bytes.IndexByte(b, '(')
	close := bytes.LastIndexByte(b, ')')
	if open < 1 || close < open || close+2 > len(b) {
		return ProcInfo{}, fmt.Errorf("%w: /proc/PID/stat: no (comm)", procfs.ErrFileParse)
	}
	pid, err := statInt32(bytes.TrimSpace(b[:open]), "pid")
	if err != nil {
		return ProcInfo{}, err
	}
	info := ProcInfo{PID: pid, Comm: string(b[open+1 : close])}
	// Fields after the comm, counted from 0: state, ppid, pgrp, session,
	// tty_nr, tpgid, flags (6), ..., num_threads (17), itrealvalue,
	// starttime (19).
	rest := b[close+2:]
	for i := 0; i <= 19; i++ {
		sp := bytes.IndexByte(rest, ' ')
		f := rest
		if sp >= 0 {
			f = rest[:sp]
		}
		switch i {
		case 0:
			if len(f) > 0 {
				info.State = f[0]
			}
		case 1:
			if info.PPID, err = statInt32(f, "ppid"); err != nil {
				return ProcInfo{}, err
			}
		case 6:
			flags, err := statUint64(f, "flags")
			if err != nil {
				return ProcInfo{}, err
			}
			info.Kthread = flags&pfKthread != 0
			info.Exiting = flags&pfExiting != 0
		case 17:
			n, err := statInt32(f, "num_threads")
			if err != nil {
				return ProcInfo{}, err
			}
			info.Threads = int(n)
		case 19:
			ticks, err := statUint64(bytes.TrimSpace(f), "starttime")
			if err != nil {
				return ProcInfo{}, err
			}
			info.Start = FromTicks(ticks)
			return info, nil
		}
		if sp < 0 {
			break
		}
		rest = rest[sp+1:]
	}
	return ProcInfo{}, fmt.Errorf("%w: /proc/PID/stat: too few fields", procfs.ErrFileParse)
}

// statInt32 and statUint64 parse f, the field name of /proc/PID/stat.
func statInt32(f []byte, name string) (int32, error) {
	v, err := strconv.ParseInt(string(f), 10, 32)
	return int32(v), statErr(name, err)
}

func statUint64(f []byte, name string) (uint64, error) {
	v, err := strconv.ParseUint(string(f), 10, 64)
	return v, statErr(name, err)
}

func statErr(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%w: /proc/PID/stat: %s: %w", procfs.ErrFileParse, name, err)
	}
	return nil
}

// Cmdline reads /proc/PID/cmdline, arguments joined by spaces.
func (p *ProcFS) Cmdline(pid int32) (string, error) {
	pr, err := p.fs.Proc(int(pid))
	if err != nil {
		return "", gone(err)
	}
	args, err := pr.CmdLine()
	if err != nil {
		return "", gone(err)
	}
	return CleanCmdline(strings.Join(args, " ")), nil
}

// KeepMarker is the environment entry by which a process marks itself
// and its descendants to outlive its agent: spared from leftover kills and
// from its agent's tree kill at max age, nothing else (tracker's "Keep
// marks"): REAPER_KEEP=1 npm run dev &.
const KeepMarker = "REAPER_KEEP=1"

// ErrNoEnviron means a process's environment gave no answer: it is being
// replaced by execve, or it is empty (which execve also shows for a
// moment). Not a failure worth counting; the process counts as not
// marked.
var ErrNoEnviron = errors.New("no environment to read yet")

// MaxEnviron bounds how much of /proc/PID/environ KeepMarked reads: a
// marker past it is not seen (the process is not marked). Environments
// are a few KiB; a process cannot make the daemon read megabytes of one
// under the table's lock.
const MaxEnviron = 128 << 10

// KeepMarked reports whether the first MaxEnviron bytes of
// /proc/PID/environ hold KeepMarker as a whole entry. The environment is
// the one the process was exec'd with (later setenv calls do not show),
// which is what the idiom needs. An exiting process (a zombie) has no
// environment left to read: that is ErrGone, not "not marked".
//
// A read that races the process's execve can return a prefix of the old
// environment, or nothing while the new one is laid out, with no error:
// each read is checked against the environment's extent in
// /proc/PID/stat (env_start and env_end, fields 50 and 51, proc(5)),
// read after it, and read again, envTries times in all; then
// ErrNoEnviron (no answer, which counts as not marked). An empty
// environment is no answer either.
func (p *ProcFS) KeepMarked(pid int32) (bool, error) {
	p.envMu.Lock()
	defer p.envMu.Unlock()
	if p.envBuf == nil {
		p.envBuf = make([]byte, MaxEnviron)
	}
	path := p.root + "/" + strconv.Itoa(int(pid)) + "/environ"
	for try := 1; ; try++ {
		n, err := p.readEnviron(path)
		if err != nil {
			return false, err
		}
		size, err := p.environSize(pid)
		if err != nil {
			return false, err
		}
		if n > 0 && (size == int64(n) || (n == len(p.envBuf) && size >= int64(n))) {
			return environHolds(p.envBuf[:n], KeepMarker), nil
		}
		if try == envTries {
			// Torn or empty. An empty environment (env -i) is no answer
			// either: execve shows one for a moment too, between its two
			// settings of env_end. Neither is marked, so nothing is lost
			// but the memo.
			return false, fmt.Errorf("%w: pid %d: read %d bytes of an environment of %d", ErrNoEnviron, pid, n, size)
		}
		// In execve (microseconds of kernel work): read again at once.
		// No waiting: this runs under the table's lock, and a process can
		// fork and exec as often as it likes.
	}
}

// envTries bounds the reads of an environment execve is replacing.
const envTries = 3

// readEnviron reads up to MaxEnviron bytes of path into envBuf.
func (p *ProcFS) readEnviron(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, gone(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	n := 0
	for n < len(p.envBuf) {
		m, err := unix.Read(fd, p.envBuf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, gone(&fs.PathError{Op: "read", Path: path, Err: err})
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// environSize is env_end - env_start of pid: the size of its environment,
// or -1 while execve has not laid the new one out (env_end 0). An exiting
// process (no address space left) is ErrGone.
func (p *ProcFS) environSize(pid int32) (int64, error) {
	path := p.root + "/" + strconv.Itoa(int(pid)) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, gone(err)
	}
	info, err := ParseStat(b)
	if err != nil {
		return 0, err
	}
	if info.leaderDead() {
		return 0, fmt.Errorf("%w: pid %d is exiting: no environment left to read", ErrGone, pid)
	}
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	// f[0] is field 3 (state): field N is f[N-3].
	if len(f) < 49 {
		return 0, fmt.Errorf("%w: pid %d: no env_start/env_end in %s", ErrNoEnviron, pid, path)
	}
	start, err1 := strconv.ParseInt(string(f[47]), 10, 64)
	end, err2 := strconv.ParseInt(string(f[48]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: %s: env_start/env_end: %q %q", procfs.ErrFileParse, path, f[47], f[48])
	}
	if end == 0 {
		return -1, nil
	}
	return end - start, nil
}

// environHolds reports whether env (NUL-terminated entries, maybe cut at
// the end) holds entry whole.
func environHolds(env []byte, entry string) bool {
	for len(env) > 0 {
		i := bytes.IndexByte(env, 0)
		if i < 0 {
			return false // cut by the bound: not a whole entry
		}
		if string(env[:i]) == entry {
			return true
		}
		env = env[i+1:]
	}
	return false
}

// MaxCmdline caps a command line, in bytes.
const MaxCmdline = 4096

// CleanCmdline makes s what every copy of a command line holds (the table,
// /agents, the spool, PostgreSQL): valid UTF-8 (invalid bytes become U+FFFD;
// PostgreSQL rejects them in text), NULs as spaces (text cannot hold NUL;
// a process that rewrote its argv may leave some), at most MaxCmdline bytes,
// cut at a rune boundary.
func CleanCmdline(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", " "), "\uFFFD")
	if len(s) <= MaxCmdline {
		return s
	}
	n := MaxCmdline
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Scan reads every process. Processes that exit during the scan are left
// out.
func (p *ProcFS) Scan() ([]ProcInfo, error) {
	d, err := os.Open(p.root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	// Large tables are read by one worker per core (each with its own
	// buffer; scans also run beside Stat): at 10,000 processes the read
	// dominates the start-up scan.
	workers := 1
	if len(names) > 1024 {
		workers = min(runtime.NumCPU(), 4)
	}
	parts := make([][]ProcInfo, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			out := make([]ProcInfo, 0, len(names)/workers+1)
			for i := w; i < len(names); i += workers {
				name := names[i]
				if name[0] < '0' || name[0] > '9' {
					continue
				}
				info, err := p.stat(name, buf)
				if err != nil {
					if errors.Is(err, ErrGone) {
						continue
					}
					errs[w] = fmt.Errorf("read %s/%s/stat: %w", p.root, name, err)
					return
				}
				out = append(out, info)
			}
			parts[w] = out
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if workers == 1 {
		return parts[0], nil
	}
	return slices.Concat(parts...), nil
}
