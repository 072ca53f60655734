package main

import (
	"net"
	"testing"
)

// TestAllowedHost: the Host names a browser may send for this machine, and
// names it may send after DNS rebinding.
func TestAllowedHost(t *testing.T) {
	local := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 9847}
	for _, c := range []struct {
		host, listen string
		ok           bool
	}{
		{"127.0.0.1:9847", "127.0.0.1", true},
		{"127.3.4.5", "127.0.0.1", true},
		{"localhost:9847", "127.0.0.1", true},
		{"LOCALHOST", "127.0.0.1", true},
		{"[::1]:9847", "::1", true},
		{"[::1]", "127.0.0.1", true},
		{"", "127.0.0.1", true},
		{"10.1.2.3:9847", "0.0.0.0", true}, // the address the request arrived at
		{"supervisor.internal:9847", "supervisor.internal", true},
		{"evil.example:9847", "127.0.0.1", false},
		{"evil.example", "0.0.0.0", false},
		{"localhost.evil.example", "127.0.0.1", false},
		{"10.9.9.9:9847", "0.0.0.0", false},
		{"127.0.0.1.nip.io", "127.0.0.1", false},
	} {
		if got := allowedHost(c.host, c.listen, local); got != c.ok {
			t.Errorf("Host %q (listen %q): allowed %v, want %v", c.host, c.listen, got, c.ok)
		}
	}
}
