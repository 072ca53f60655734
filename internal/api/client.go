package api

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Client is an HTTP client of the API socket at path, for the clients
// that read it (status, events, top): timeout 0 is no overall timeout (a
// stream). With keep, one idle connection is kept for repeated reads;
// otherwise each request dials anew.
func Client(path string, timeout time.Duration, keep bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		ResponseHeaderTimeout: 5 * time.Second,
	}
	if keep {
		tr.MaxIdleConnsPerHost = 1
	} else {
		tr.DisableKeepAlives = true
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}
