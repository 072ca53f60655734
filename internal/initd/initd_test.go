package initd

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"unsafe"

	"github.com/agent-supervisor/supervisor/internal/tracker"
	"golang.org/x/sys/unix"
)

func TestParseForward(t *testing.T) {
	for in, want := range map[string]Forward{"child": ForwardChild, "group": ForwardGroup} {
		got, err := ParseForward(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseForward(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "Group", "pgrp", "children"} {
		if _, err := ParseForward(bad); err == nil {
			t.Errorf("ParseForward(%q) accepted", bad)
		}
	}
}

func TestForwardTarget(t *testing.T) {
	if got := ForwardChild.target(4242); got != 4242 {
		t.Errorf("child target %d", got)
	}
	// kill(2) with -pgid: the group whose id is CMD's PID.
	if got := ForwardGroup.target(4242); got != -4242 {
		t.Errorf("group target %d", got)
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		ws   unix.WaitStatus
		want int
	}{
		{0, 0},
		{3 << 8, 3},
		{255 << 8, 255},
		{unix.WaitStatus(unix.SIGTERM), 128 + 15},
		{unix.WaitStatus(unix.SIGKILL), 128 + 9},
		{unix.WaitStatus(unix.SIGSEGV) | 0x80, 128 + 11}, // core dumped
	} {
		if got := ExitCode(c.ws); got != c.want {
			t.Errorf("ExitCode(%#x) = %d, want %d", uint32(c.ws), got, c.want)
		}
	}
}

func TestStartCode(t *testing.T) {
	if got := StartCode(fmt.Errorf("command %q: %w: %w", "nope", errNotFound, exec.ErrNotFound)); got != 127 {
		t.Errorf("not found: %d", got)
	}
	if got := StartCode(fmt.Errorf("start: %w", unix.ENOENT)); got != 127 {
		t.Errorf("ENOENT: %d", got)
	}
	if got := StartCode(fmt.Errorf("start: %w", unix.EACCES)); got != 126 {
		t.Errorf("EACCES: %d", got)
	}
}

func TestCmdlineArgs(t *testing.T) {
	if err := cmdlineArgs(nil); err == nil {
		t.Error("no command accepted")
	}
	if err := cmdlineArgs([]string{""}); err == nil {
		t.Error("empty command accepted")
	}
	if err := cmdlineArgs([]string{"sh", "a\x00b"}); err == nil || !errors.Is(err, unix.EINVAL) {
		t.Errorf("NUL in an argument: %v", err)
	}
	if err := cmdlineArgs([]string{"sh", "-c", "exit 3"}); err != nil {
		t.Error(err)
	}
}

// siginfo_t's union (si_pid first for SIGCHLD) starts at 16 on 64-bit
// Linux, 12 on 32-bit.
func TestUnionOffset(t *testing.T) {
	want := uintptr(16)
	if unsafe.Sizeof(uintptr(0)) == 4 {
		want = 12
	}
	if unionOffset != want {
		t.Errorf("unionOffset %d, want %d", unionOffset, want)
	}
}

func pids(ps []tracker.ProcInfo) []int32 {
	var out []int32
	for _, p := range ps {
		out = append(out, p.PID)
	}
	slices.Sort(out)
	return out
}

// What is ended when CMD exits: as PID 1 everything but us, as a
// subreaper our descendants; never a hook (an owned child) or what it
// started, never a kernel thread; live processes and zombies apart.
func TestPick(t *testing.T) {
	p := func(pid, ppid int32, state byte) tracker.ProcInfo {
		return tracker.ProcInfo{PID: pid, PPID: ppid, State: state, Threads: 1}
	}
	scan := []tracker.ProcInfo{
		p(1, 0, 'S'),   // the real init (subreaper case) or us (PID 1 case)
		p(10, 1, 'S'),  // us as a subreaper
		p(11, 10, 'S'), // CMD's leftover
		p(12, 11, 'S'), // its child
		p(13, 10, 'Z'), // a zombie of ours
		p(14, 10, 'S'), // a hook's shell (owned)
		p(15, 14, 'S'), // what the hook started
		p(20, 1, 'S'),  // not ours as a subreaper
		p(21, 0, 'S'),  // entered the namespace from outside (ppid 0)
		{PID: 22, PPID: 10, Kthread: true, State: 'S'},
	}
	skip := func() map[int32]bool { return map[int32]bool{14: true} }
	if got := pids(pick(scan, 10, false, skip(), false)); !slices.Equal(got, []int32{11, 12}) {
		t.Errorf("subreaper, live: %v", got)
	}
	if got := pids(pick(scan, 10, false, skip(), true)); !slices.Equal(got, []int32{13}) {
		t.Errorf("subreaper, zombies: %v", got)
	}
	// As PID 1 (self 1): every process but us, hooks and kernel threads.
	if got := pids(pick(scan, 1, true, skip(), false)); !slices.Equal(got, []int32{10, 11, 12, 20, 21}) {
		t.Errorf("pid 1, live: %v", got)
	}
	if got := pids(pick(scan, 1, true, map[int32]bool{}, true)); !slices.Equal(got, []int32{13}) {
		t.Errorf("pid 1, zombies: %v", got)
	}
	// A leader that exited while its threads run is live.
	thr := []tracker.ProcInfo{p(1, 0, 'S'), {PID: 30, PPID: 1, State: 'Z', Threads: 3}}
	if got := pids(pick(thr, 1, true, map[int32]bool{}, false)); !slices.Equal(got, []int32{30}) {
		t.Errorf("zombie leader with threads: %v", got)
	}
}
