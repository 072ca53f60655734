package e2e

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary's other lives. Started with one of these variables in
// its environment it is no test run but a process the tests use: before
// any test code runs (package initialisation, on the main thread, locked
// to it), it does what the variable says and exits or execs.
const (
	// agentEnv=1: the fake agent (fakeAgent), run through a symlink
	// named "claude" or anything else (startAgent): its comm is the
	// symlink's name, as a real agent's is its program's.
	agentEnv = "SUPERVISOR_TEST_AGENT"
	// hostileEnv=MODE: an unprivileged local user attacking the daemon's
	// endpoints (hostileHelper, hostile_e2e_test.go).
	hostileEnv = "SUPERVISOR_TEST_HOSTILE"
	// hostileCredEnv=UID:GID[:GROUPS]: the credentials it drops to.
	hostileCredEnv = "SUPERVISOR_TEST_CRED"
	// dropCapsEnv=kill,sys_resource and execAsEnv=UID: a wrapper that
	// drops those capabilities and becomes that user (and group), then
	// execs its arguments (wrapperExec).
	dropCapsEnv = "SUPERVISOR_TEST_DROP_CAPS"
	execAsEnv   = "SUPERVISOR_TEST_EXEC_AS"
)

func init() {
	switch {
	case os.Getenv(dropCapsEnv) != "" || os.Getenv(execAsEnv) != "":
		err := wrapperExec(os.Getenv(dropCapsEnv), os.Getenv(execAsEnv))
		fmt.Fprintln(os.Stderr, "test wrapper:", err)
		os.Exit(126)
	case os.Getenv(hostileEnv) != "":
		os.Exit(hostileHelper(os.Getenv(hostileEnv)))
	case os.Getenv(agentEnv) == "1":
		// Kept on the main thread: prctl(PR_SET_NAME) (-rename) then
		// renames the thread-group leader, the process.
		runtime.LockOSThread()
		os.Exit(fakeAgent(os.Args[1:]))
	}
}

// fakeAgent is the body of a fake agent process.
func fakeAgent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM (inherited by children)")
	children := fs.Int("children", 0, "children to start (through /proc/self/exe, so named \"exe\")")
	grandchildren := fs.Int("grandchildren", 0, "grandchildren each child starts")
	grandchildIgnore := fs.Bool("grandchild-ignore-term", false, "grandchildren ignore SIGTERM")
	childIgnore := fs.Bool("child-ignore-term", false, "children ignore SIGTERM")
	rename := fs.String("rename", "", "prctl(PR_SET_NAME) to this after -rename-delay")
	renameDelay := fs.Duration("rename-delay", 100*time.Millisecond, "")
	threads := fs.Int("threads", 0, "threads that rename themselves and exit")
	exitAfter := fs.Duration("exit-after", 0, "exit by itself after this long")
	termFile := fs.String("term-file", "", "on SIGTERM write CLOCK_BOOTTIME ns here, then exit 143")
	zombies := fs.Int("zombies", 0, "children that exit at once and are never waited for")
	label := fs.String("label", "", `also print "child PID LABEL", for tests that start several kinds of children`)
	exitFile := fs.String("exit-file", "", "exit by itself (status 0) once this file exists")
	onUSR1 := fs.String("on-usr1", "", `print "ready", then on SIGUSR1 "rename=NAME": prctl(PR_SET_NAME) and print "renamed"; `+
		`"exec": execve the arguments after the flags (another program, the same process)`)
	var spawns []string
	fs.Func("spawn", "start a child as SPEC says (see spawnChild); repeatable", func(v string) error {
		spawns = append(spawns, v)
		return nil
	})
	relay := fs.String("relay", "", "start the child SPEC describes and exit at once: the middle of a double fork")
	cgroup := fs.String("cgroup", "", "first join this cgroup v2 directory, as a container runtime does before exec ")
	res := resourceFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cgroup != "" {
		if err := joinCgroup(*cgroup); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// SIGTERM's handling first: from here on a SIGTERM is recorded.
	switch {
	case *termFile != "":
		// With -ignore-term the SIGTERM is recorded and otherwise ignored:
		// only SIGKILL ends the process, and the test knows when SIGTERM came.
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		go func() {
			<-ch
			os.WriteFile(*termFile, []byte(strconv.FormatInt(boottime(), 10)), 0o644)
			if !*ignoreTerm {
				os.Exit(143)
			}
		}()
	case *ignoreTerm:
		signal.Ignore(syscall.SIGTERM)
	}
	if err := res.start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *relay != "" {
		// Started with Setsid by the parent (setsid(2) in the child before
		// exec): the child started here is in a new session, and when this
		// process exits the kernel reparents it to the nearest subreaper or
		// PID 1 (kernel/exit.c, find_new_reaper): the classic daemon.
		if _, err := spawnChild(*relay); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Printf("pid %d\n", os.Getpid())
	if *label != "" {
		fmt.Printf("child %d %s\n", os.Getpid(), *label)
	}
	for _, spec := range spawns {
		c, err := spawnChild(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go c.Wait() // reap it (the relay of a double fork exits at once)
	}
	for i := 0; i < *zombies; i++ {
		// Started and never waited for: each stays a zombie until we exit.
		c := exec.Command("/bin/true")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for {
			// Wait for it to be a zombie (state Z in /proc/PID/stat).
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if *zombies > 0 {
		fmt.Println("zombies ready")
	}
	for i := 0; i < *children; i++ {
		cargs := []string{"-children", strconv.Itoa(*grandchildren)}
		if *grandchildIgnore {
			cargs = append(cargs, "-child-ignore-term")
		}
		if *childIgnore {
			cargs = append(cargs, "-ignore-term")
		}
		c := exec.Command("/proc/self/exe", cargs...)
		c.Stdout = os.Stdout
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *threads > 0 {
		var wg sync.WaitGroup
		for i := 0; i < *threads; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A goroutine that exits while locked ends its thread:
				// a real thread exit, after a real thread rename.
				runtime.LockOSThread()
				setName("worker")
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
		fmt.Println("threads done")
	}
	if *rename != "" {
		time.Sleep(*renameDelay)
		setName(*rename)
		fmt.Println("renamed")
	}
	if *onUSR1 != "" {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		fmt.Println("ready")
		<-usr1
		switch action, name, _ := strings.Cut(*onUSR1, "="); action {
		case "rename":
			setName(name)
			fmt.Println("renamed")
		case "exec":
			path, err := exec.LookPath(fs.Arg(0))
			if err == nil {
				signal.Reset()
				err = syscall.Exec(path, fs.Args(), os.Environ())
			}
			fmt.Fprintln(os.Stderr, "exec:", err)
			return 1
		}
	}
	if *exitAfter > 0 {
		time.Sleep(*exitAfter)
		return 0
	}
	if *exitFile != "" {
		for {
			if _, err := os.Stat(*exitFile); err == nil {
				return 0
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for {
		// Not select{}: without cgo the runtime would call that a deadlock.
		time.Sleep(time.Hour)
	}
}

// spawnChild starts a fake-agent child as spec says: comma-separated
// items, each KEY=VALUE or a bare word.
//
//	label=NAME      the child prints "child PID NAME" (required)
//	exe=PATH        run through PATH (a symlink to the test binary: the
//	                child's comm is its name); default /proc/self/exe
//	term=PATH       the child records when it got SIGTERM in PATH
//	ignore-term     SIGTERM does not end it (recorded if term= is given)
//	exit-file=PATH  the child exits by itself once PATH exists
//	env=K=V         add K=V to the child's environment
//	double-fork     start it through a relay that calls setsid, starts the
//	                child and exits: the child is reparented away
//	hold-mb=N, sleepers=N, spin, bomb, cgroup-procs=PATH: the resource
//	                flags (resources_e2e_test.go)
//
// The child shares the caller's stdout, so its lines reach the test.
func spawnChild(spec string) (*exec.Cmd, error) {
	exe := "/proc/self/exe"
	var args, env []string
	var relay bool
	for _, item := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(item, "=")
		switch k {
		case "label":
			args = append(args, "-label", v)
		case "exe":
			exe = v
		case "term":
			args = append(args, "-term-file", v)
		case "ignore-term":
			args = append(args, "-ignore-term")
		case "exit-file":
			args = append(args, "-exit-file", v)
		case "env":
			env = append(env, v)
		case "double-fork":
			relay = true
		case "hold-mb", "sleepers", "cgroup-procs", "holding":
			args = append(args, "-"+k, v)
		case "spin", "bomb":
			args = append(args, "-"+k)
		default:
			return nil, fmt.Errorf("spawn %q: unknown item %q", spec, item)
		}
	}
	var c *exec.Cmd
	if relay {
		// The relay gets the spec without double-fork.
		var rest []string
		for _, item := range strings.Split(spec, ",") {
			if item != "double-fork" {
				rest = append(rest, item)
			}
		}
		c = exec.Command("/proc/self/exe", "-relay", strings.Join(rest, ","))
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		c = exec.Command(exe, args...)
		c.Env = append(os.Environ(), env...)
	}
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("spawn %q: %w", spec, err)
	}
	return c, nil
}

// setName renames the calling thread, as Node's process.title does for the
// main thread: prctl(PR_SET_NAME), which the kernel reports as a comm event.
func setName(name string) {
	p, _ := unix.BytePtrFromString(name)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
}

// fakeResources are the fake agent's resource flags.
type fakeResources struct {
	holdMB   *int
	sleepers *int
	spin     *bool
	bomb     *bool
	cgroup   *string
	holding  *string
	// busyAfter, busyFor: one burst of CPU at a known moment, whose end is
	// printed (burst-end BOOTTIME_NS); pulse: a short burst every period.
	busyAfter, busyFor, pulse *time.Duration
}

func resourceFlags(fs *flag.FlagSet) *fakeResources {
	return &fakeResources{
		holdMB:    fs.Int("hold-mb", 0, "allocate and touch this many MB and keep them"),
		sleepers:  fs.Int("sleepers", 0, "start this many `sleep` children"),
		spin:      fs.Bool("spin", false, "burn CPU on one thread"),
		bomb:      fs.Bool("bomb", false, "fork `sleep` children without end (bound it with cgroup-procs)"),
		cgroup:    fs.String("cgroup-procs", "", "first write our PID to this cgroup.procs"),
		holding:   fs.String("holding", "", "write CLOCK_BOOTTIME ns here just before -hold-mb touches its memory"),
		busyAfter: fs.Duration("busy-after", 0, "with -busy-for: wait this long, then burn CPU"),
		busyFor:   fs.Duration("busy-for", 0, "burn CPU this long after -busy-after, then print burst-end and the boottime"),
		pulse:     fs.Duration("pulse", 0, "burn CPU for 20ms every this long"),
	}
}

// burn uses CPU on this thread until end.
func burn(end time.Time) {
	for x := 0; time.Now().Before(end); x++ {
		_ = x * x
	}
}

// held keeps the memory -hold-mb touched reachable.
var held []byte

func (r *fakeResources) start() error {
	if *r.cgroup != "" {
		if err := os.WriteFile(*r.cgroup, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return err
		}
	}
	if n := *r.holdMB; n > 0 {
		if *r.holding != "" {
			_ = os.WriteFile(*r.holding, []byte(strconv.FormatInt(boottime(), 10)), 0o644)
		}
		held = make([]byte, n<<20)
		for i := 0; i < len(held); i += 4096 {
			held[i] = 1 // touched: anonymous pages now resident
		}
		fmt.Printf("held %d %d\n", os.Getpid(), n)
	}
	for i := 0; i < *r.sleepers; i++ {
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err != nil {
			return err
		}
		go c.Wait()
	}
	if *r.sleepers > 0 {
		fmt.Printf("sleepers %d %d\n", os.Getpid(), *r.sleepers)
	}
	if *r.spin {
		go func() {
			runtime.LockOSThread()
			for x := 0; ; x++ {
				_ = x * x
			}
		}()
		fmt.Printf("spinning %d\n", os.Getpid())
	}
	if *r.busyFor > 0 {
		go func() {
			time.Sleep(*r.busyAfter)
			burn(time.Now().Add(*r.busyFor))
			// The last CPU use but this line's: the boottime is taken after
			// the burst, the write follows within microseconds.
			fmt.Printf("burst-end %d\n", boottime())
		}()
	}
	if *r.pulse > 0 {
		go func() {
			for {
				time.Sleep(*r.pulse)
				burn(time.Now().Add(20 * time.Millisecond))
			}
		}()
		fmt.Printf("pulsing %d\n", os.Getpid())
	}
	if *r.bomb {
		fmt.Printf("bombing %d\n", os.Getpid())
		go func() {
			for {
				c := exec.Command("sleep", "1000")
				if c.Start() != nil {
					time.Sleep(time.Millisecond) // pids.max reached: try again
					continue
				}
				go c.Wait()
			}
		}()
	}
	return nil
}

// joinCgroup moves the calling process into the cgroup v2 directory dir:
// what a container runtime does to the container's process before it
// execs the container's command. Called by the fake agent (-cgroup).
func joinCgroup(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("join cgroup %s: %w", dir, err)
	}
	return nil
}

// wrapperExec drops the capabilities named in caps (kill, sys_resource)
// from the bounding, inheritable and ambient sets, so that the command
// runs without them even as root (capabilities(7): root's permitted set
// after execve is the bounding set's, plus inheritable and ambient), and
// becomes the user uid (gid the same, no supplementary groups), then execs
// os.Args[1:]. Like setpriv --bounding-set=-kill, without needing setpriv.
// It returns only on failure.
func wrapperExec(caps, uid string) error {
	if len(os.Args) < 2 {
		return fmt.Errorf("nothing to exec")
	}
	if caps != "" {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return fmt.Errorf("capget: %w", err)
		}
		for _, name := range strings.Split(caps, ",") {
			c, ok := map[string]uintptr{"kill": unix.CAP_KILL, "sys_resource": unix.CAP_SYS_RESOURCE}[name]
			if !ok {
				return fmt.Errorf("unknown capability %q", name)
			}
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
				return fmt.Errorf("drop %s from the bounding set: %w", name, err)
			}
			data[0].Inheritable &^= 1 << c
		}
		// Capabilities belong to a thread, and execve takes the calling
		// thread's: this one, locked during initialisation.
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return fmt.Errorf("capset: %w", err)
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
			return fmt.Errorf("clear the ambient set: %w", err)
		}
	}
	if uid != "" {
		id, err := strconv.Atoi(uid)
		if err != nil {
			return err
		}
		// Raw: this thread only, the one that execs.
		for _, c := range []struct {
			nr   uintptr
			args [3]uintptr
		}{
			{unix.SYS_SETGROUPS, [3]uintptr{0, 0, 0}},
			{unix.SYS_SETRESGID, [3]uintptr{uintptr(id), uintptr(id), uintptr(id)}},
			{unix.SYS_SETRESUID, [3]uintptr{uintptr(id), uintptr(id), uintptr(id)}},
		} {
			if _, _, e := unix.RawSyscall(c.nr, c.args[0], c.args[1], c.args[2]); e != 0 {
				return fmt.Errorf("become uid %d: syscall %d: %w", id, c.nr, e)
			}
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, dropCapsEnv+"=") && !strings.HasPrefix(kv, execAsEnv+"=") {
			env = append(env, kv)
		}
	}
	return unix.Exec(os.Args[1], os.Args[1:], env)
}

// hostileHelper is the hostile helper's life (hostile_e2e_test.go starts
// it): it drops to the credentials in hostileCredEnv, then acts.
func hostileHelper(mode string) int {
	if err := dropTo(os.Getenv(hostileCredEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "hostile helper:", err)
		return 1
	}
	return hostileMain(mode, os.Args[1:])
}

// dropTo sets this process's groups, gid and uid (all threads: Go's
// syscall.Set* apply to every thread since Go 1.16).
func dropTo(cred string) error {
	f := strings.Split(cred, ":")
	if len(f) < 2 {
		return fmt.Errorf("bad %s %q", hostileCredEnv, cred)
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad %s %q", hostileCredEnv, cred)
	}
	groups := []int{}
	if len(f) > 2 && f[2] != "" {
		for _, g := range strings.Split(f[2], ",") {
			n, err := strconv.Atoi(g)
			if err != nil {
				return fmt.Errorf("bad group %q", g)
			}
			groups = append(groups, n)
		}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	if os.Geteuid() != uid {
		return fmt.Errorf("still uid %d", os.Geteuid())
	}
	return nil
}

// hostileMain is the helper's body. Modes:
//
//	flood ADDR N [FROM]
//	               hold N keep-alive connections to ADDR (from the local
//	               address FROM, e.g. 127.0.0.2), each sending GET /healthz
//	               every 4 s, just inside the server's 5 s idle timeout, so
//	               that a slot once taken is never let go; a connection the
//	               server closes is opened again a second or so after its
//	               close. Prints "flooding N" once each has been tried,
//	               then runs until stdin closes.
//	get unix:PATH|tcp:ADDR URLPATH
//	               one GET; prints "status CODE" and the body, or "error: ...".
//	streams PATH N open N /events streams on the unix socket PATH, one
//	               connection each, and keep the ones answered 200 open;
//	               prints "streams OK" (how many were), then runs until
//	               stdin closes.
func hostileMain(mode string, args []string) int {
	switch {
	case mode == "flood" && (len(args) == 2 || len(args) == 3):
		n, _ := strconv.Atoi(args[1])
		from := ""
		if len(args) == 3 {
			from = args[2]
		}
		flood(args[0], n, from)
	case mode == "get" && len(args) == 2:
		hostileGet(args[0], args[1])
		return 0
	case mode == "streams" && len(args) == 2:
		n, _ := strconv.Atoi(args[1])
		hostileStreams(args[0], n)
	default:
		fmt.Fprintf(os.Stderr, "hostile helper: bad mode %q %q\n", mode, args)
		return 2
	}
	io.Copy(io.Discard, os.Stdin) // until the test closes it or kills us
	return 0
}

// flood is the hostile side of the HTTP flood: an attacker who holds slots
// (a request before each idle timeout) and retakes each one freed. It
// never spins: a connection is opened again only after the previous one
// is closed and a pause of a second or more, and all of them together
// open at most floodDialsPerSecond, so the flood itself cannot starve the
// machine the daemon and the test run on (it runs at normal priority).
func flood(addr string, n int, from string) {
	const floodDialsPerSecond = 200
	dials := time.NewTicker(time.Second / floodDialsPerSecond)
	dialer := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	var first sync.WaitGroup
	first.Add(n)
	for i := range n {
		go func() {
			tried := sync.OnceFunc(first.Done)
			for {
				<-dials.C
				if c, err := dialer.Dial("tcp", addr); err == nil {
					hold(c, tried)
					c.Close()
				}
				tried()
				// 1 to 2 s, spread so that they do not come back at once.
				time.Sleep(time.Second + time.Duration(i%100)*10*time.Millisecond)
			}
		}()
	}
	first.Wait()
	fmt.Printf("flooding %d\n", n)
}

// hold sends GET /healthz on c every 4 s and reads each answer, until the
// server closes c or fails a request; tried is called after the first
// request is sent.
func hold(c net.Conn, tried func()) {
	br := bufio.NewReader(c)
	for {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			return
		}
		tried()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			return // the server said it closes this one
		}
		time.Sleep(4 * time.Second)
	}
}

func hostileGet(target, path string) {
	c, url := &http.Client{Timeout: 10 * time.Second}, ""
	switch kind, where, _ := strings.Cut(target, ":"); kind {
	case "unix":
		c, url = unixClient(where, 10*time.Second), "http://supervisor"+path
	default:
		url = "http://" + where + path
	}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return
	}
	defer resp.Body.Close()
	// An /events stream that was let through never ends: its first
	// bytes are enough.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK && strings.HasSuffix(path, "/events") {
		b = nil
	}
	fmt.Printf("status %d\n%s\n", resp.StatusCode, b)
}

func hostileStreams(sock string, n int) {
	ok := 0
	for range n {
		resp, err := unixClient(sock, 0).Get("http://supervisor/events")
		if err != nil {
			fmt.Printf("stream: %v\n", err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			fmt.Printf("stream: %s %s\n", resp.Status, strings.TrimSpace(string(b)))
			continue
		}
		ok++
		go io.Copy(io.Discard, resp.Body) // a reading client: never dropped as slow
	}
	fmt.Printf("streams %d\n", ok)
}
