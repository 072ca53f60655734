package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/api"
	"github.com/agent-supervisor/supervisor/internal/config"
)

// The client side of the API socket: status and events find the daemon
// the way the control commands do, through the control socket's path.

// apiFlags are the flags status and events take to find the daemon.
type apiFlags struct {
	fs                   *flag.FlagSet
	cmd                  string
	api, control, listen *string
	// moreUsage and valid are a command's other flags: their usage,
	// after apiUsage, and the check of their values (nil: any).
	moreUsage string
	valid     func() bool
}

// newAPIFlags is the flag set of the client command cmd, with the flags
// that find the daemon; the command adds its own to f.fs.
func newAPIFlags(cmd string) *apiFlags {
	fs := config.NewFlagSet(cmd)
	return &apiFlags{
		fs:      fs,
		cmd:     cmd,
		api:     config.String(fs, "api-socket"),
		control: config.String(fs, "control-socket"),
		listen:  config.String(fs, "listen"),
	}
}

// apiUsage is the flags' usage line.
const apiUsage = "[--api-socket PATH | --control-socket PATH]"

// resolve is the API socket's path: --api-socket, else beside
// --control-socket, else REAPER_API_SOCKET, else beside
// REAPER_CONTROL_SOCKET, else beside the default control socket. A
// --listen given is said to be ignored on stderr.
func (f *apiFlags) resolve(getenv func(string) string, stderr io.Writer) string {
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	path := ""
	switch {
	case given["api-socket"]:
		path = *f.api
	case given["control-socket"]:
		path = config.APISocketBeside(*f.control)
	case getenv("REAPER_API_SOCKET") != "" && getenv("REAPER_API_SOCKET") != config.APISocketAuto:
		path = getenv("REAPER_API_SOCKET")
	case getenv("REAPER_CONTROL_SOCKET") != "":
		path = config.APISocketBeside(getenv("REAPER_CONTROL_SOCKET"))
	default:
		path = config.APISocketBeside(config.DefaultControlSocket)
	}
	if given["listen"] {
		fmt.Fprintf(stderr, "supervisor: %s: --listen is ignored: /agents and /events are served on the daemon's API socket only "+
			"(the TCP listener has /healthz and /metrics); reading %s\n", f.cmd, path)
	}
	return path
}

// parse parses a client command's flags (it takes no arguments) and finds
// the API socket; done, with the exit code, when it printed the help (0)
// or a usage error (2).
func (f *apiFlags) parse(args []string, getenv func(string) string, stdout, stderr io.Writer) (path string, code int, done bool) {
	if code, done := config.ParseFlags(f.fs, args, stdout, stderr); done {
		return "", code, true
	}
	path = f.resolve(getenv, stderr)
	if f.fs.NArg() > 0 || path == "" || (f.valid != nil && !f.valid()) {
		fmt.Fprintf(stderr, "supervisor: %s: want %s%s and no arguments\n", f.cmd, apiUsage, f.moreUsage)
		return "", 2, true
	}
	return path, 0, false
}

// apiHTTP is an HTTP client that dials the API socket at path.
func apiHTTP(path string, timeout time.Duration) *http.Client {
	return api.Client(path, timeout, false)
}

// apiURL is the URL of an endpoint on the API socket (the host is not
// looked at).
func apiURL(path string) string { return "http://supervisor" + path }

// apiError explains a failure to reach the API socket at path.
func apiError(cmd, path string, err error) string {
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return fmt.Sprintf("supervisor: %s: permission denied on %s: the API socket is for root (and members of the daemon's --control-group)", cmd, path)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("supervisor: %s: no daemon answers on %s (is it running, with this --api-socket or --control-socket?)", cmd, path)
	}
	return fmt.Sprintf("supervisor: %s: %s: %v", cmd, path, err)
}

// httpStatusError is a non-200 answer, with what the daemon said.
type httpStatusError struct {
	status string
	body   string
}

func (e *httpStatusError) Error() string {
	if e.body == "" {
		return e.status
	}
	return e.status + ": " + e.body
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &httpStatusError{status: resp.Status, body: printable(strings.TrimSpace(string(b)))}
}

// Health asks the daemon's API socket for /healthz and prints the JSON
// it answers: the probe the DaemonSet runs (an exec probe), which reaches
// the daemon through root's own connection slots, where no other user's
// connections count. Exit 0: answered 200 (ready); 1: answered something
// else (not ready, refused) or nothing answered within --timeout; 2: a
// usage error.
func Health(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	af := newAPIFlags("health")
	timeout := config.Duration(af.fs, "timeout")
	af.moreUsage = " [--timeout DURATION > 0]"
	af.valid = func() bool { return *timeout > 0 }
	path, code, done := af.parse(args, getenv, stdout, stderr)
	if done {
		return code
	}
	resp, err := apiHTTP(path, *timeout).Get(apiURL("/healthz"))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			fmt.Fprintf(stderr, "supervisor: health: no answer on %s within %s\n", path, *timeout)
		} else {
			fmt.Fprintln(stderr, apiError("health", path, err))
		}
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: health: %s: reading the answer: %v\n", path, err)
		return 1
	}
	stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		var h struct {
			Status string `json:"status"`
		}
		why := printable(strings.TrimSpace(string(body)))
		if json.Unmarshal(body, &h) == nil && h.Status != "" {
			why = "status " + printable(h.Status)
		}
		fmt.Fprintf(stderr, "supervisor: health: not ready: %s answers %s: %.200s\n", path, resp.Status, why)
		return 1
	}
	return 0
}
