package tracker

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"
)

// pfKthread is PF_KTHREAD from include/linux/sched.h, reported in the flags
// field of /proc/PID/stat.
const pfKthread = 0x00200000

// ProcFS reads processes from a procfs mount.
type ProcFS struct {
	fs procfs.FS
}

// NewProcFS opens the procfs mounted at root ("/proc" normally).
func NewProcFS(root string) (*ProcFS, error) {
	f, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open procfs %s: %w", root, err)
	}
	return &ProcFS{fs: f}, nil
}

// gone maps the errors of a process that exited between listing and reading
// to ErrGone, as node_exporter does.
func gone(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}

func info(st procfs.ProcStat) ProcInfo {
	var state byte
	if st.State != "" {
		state = st.State[0]
	}
	return ProcInfo{
		PID:     int32(st.PID),
		PPID:    int32(st.PPID),
		Start:   FromTicks(st.Starttime),
		Comm:    st.Comm,
		State:   state,
		Kthread: st.Flags&pfKthread != 0,
	}
}

// Stat reads /proc/PID/stat.
func (p *ProcFS) Stat(pid int32) (ProcInfo, error) {
	pr, err := p.fs.Proc(int(pid))
	if err != nil {
		return ProcInfo{}, gone(err)
	}
	st, err := pr.Stat()
	if err != nil {
		return ProcInfo{}, gone(err)
	}
	return info(st), nil
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
	return strings.Join(args, " "), nil
}

// Scan reads every process. Processes that exit during the scan are left
// out.
func (p *ProcFS) Scan() ([]ProcInfo, error) {
	all, err := p.fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]ProcInfo, 0, len(all))
	for _, pr := range all {
		st, err := pr.Stat()
		if err != nil {
			if errors.Is(gone(err), ErrGone) {
				continue
			}
			return nil, fmt.Errorf("read /proc/%d/stat: %w", pr.PID, err)
		}
		out = append(out, info(st))
	}
	return out, nil
}
