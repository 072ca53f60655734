package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// The client side of the API socket: status and events find the daemon
// the way the control commands do, through the control socket's path.

// apiFlags are the flags status and events take to find the daemon.
type apiFlags struct {
	api, control, listen *string
}

func addAPIFlags(fs *flag.FlagSet) *apiFlags {
	return &apiFlags{
		api:     fs.String("api-socket", "", "the daemon's API socket (env REAPER_API_SOCKET; default "+apiSocketName+" beside the control socket)"),
		control: fs.String("control-socket", "", "the daemon's control socket, whose directory holds the API socket (env REAPER_CONTROL_SOCKET, default "+defaultControlSocket+")"),
		listen:  fs.String("listen", "", "ignored: /agents and /events are no longer served over TCP"),
	}
}

// apiUsage is the flags' usage line.
const apiUsage = "[--api-socket PATH | --control-socket PATH]"

// resolve is the API socket's path: --api-socket, else beside
// --control-socket, else REAPER_API_SOCKET, else beside
// REAPER_CONTROL_SOCKET, else beside the default control socket. A
// --listen given is said to be ignored on stderr.
func (f *apiFlags) resolve(fs *flag.FlagSet, cmd string, getenv func(string) string, stderr io.Writer) string {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	path := ""
	switch {
	case given["api-socket"]:
		path = *f.api
	case given["control-socket"]:
		path = apiSocketBeside(*f.control)
	case getenv("REAPER_API_SOCKET") != "" && getenv("REAPER_API_SOCKET") != apiSocketAuto:
		path = getenv("REAPER_API_SOCKET")
	case getenv("REAPER_CONTROL_SOCKET") != "":
		path = apiSocketBeside(getenv("REAPER_CONTROL_SOCKET"))
	default:
		path = apiSocketBeside(defaultControlSocket)
	}
	if given["listen"] {
		fmt.Fprintf(stderr, "supervisor: %s: --listen is ignored: /agents and /events are served on the daemon's API socket only "+
			"(the TCP listener has /healthz and /metrics); reading %s\n", cmd, path)
	}
	return path
}

// apiHTTP is an HTTP client that dials the API socket at path.
func apiHTTP(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		ResponseHeaderTimeout: 5 * time.Second,
		DisableKeepAlives:     true,
	}}
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
