package main

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// limitListener: a listener's own cap, and a per-address cap under it.
// Each dial is followed by the listener's verdict on it (accepted, or
// refused and why), so nothing here waits on time.
func TestLimitListenerCaps(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type verdict struct {
		from  netip.Addr
		ok    bool
		perIP bool
		conn  net.Conn
	}
	verdicts := make(chan verdict, 16)
	var n atomic.Int64
	ln := &limitListener{Listener: tl, n: &n, max: 3, perIP: 2, refused: func(ip netip.Addr, perIP bool) {
		verdicts <- verdict{from: ip, perIP: perIP}
	}}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			verdicts <- verdict{from: remoteIP(c.RemoteAddr()), ok: true, conn: c}
		}
	}()
	dial := func(from string) verdict {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", tl.Addr().String())
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		select {
		case v := <-verdicts:
			if v.from.String() != from {
				t.Fatalf("verdict for %s, want for %s", v.from, from)
			}
			return v
		case <-time.After(30 * time.Second):
			t.Fatalf("no verdict on a connection from %s", from)
		}
		return verdict{}
	}
	a1, a2 := dial("127.0.0.2"), dial("127.0.0.2")
	if !a1.ok || !a2.ok {
		t.Fatalf("the first two from 127.0.0.2: %+v %+v, want accepted", a1, a2)
	}
	if v := dial("127.0.0.2"); v.ok || !v.perIP {
		t.Errorf("a third from 127.0.0.2: %+v, want refused by the per-address cap", v)
	}
	if v := dial("127.0.0.3"); !v.ok {
		t.Errorf("one from 127.0.0.3: %+v, want accepted", v)
	}
	if v := dial("127.0.0.4"); v.ok || v.perIP {
		t.Errorf("a fourth in all: %+v, want refused by the listener's cap", v)
	}
	if got := n.Load(); got != 3 {
		t.Errorf("%d counted, want 3", got)
	}
	a1.conn.Close()
	a1.conn.Close() // twice: one release
	if got := n.Load(); got != 2 {
		t.Errorf("%d counted after a close, want 2", got)
	}
	if v := dial("127.0.0.4"); !v.ok {
		t.Errorf("one from 127.0.0.4 after a slot was freed: %+v, want accepted", v)
	}
	if v := dial("127.0.0.2"); v.ok {
		t.Errorf("127.0.0.2 again with the listener full: %+v, want refused", v)
	}
	a2.conn.Close()
	if v := dial("127.0.0.2"); !v.ok {
		t.Errorf("127.0.0.2 with a slot free: %+v, want accepted", v)
	}
	ln.mu.Lock()
	if len(ln.byIP) != 3 {
		t.Errorf("per-address counts %v, want 3 addresses", ln.byIP)
	}
	ln.mu.Unlock()
}

// spent: the requests and the age that end a TCP connection.
func TestConnAgeSpent(t *testing.T) {
	req := func(ca *connAge) *http.Request {
		r, _ := http.NewRequest("GET", "/healthz", nil)
		return r.WithContext(context.WithValue(r.Context(), connAgeKey{}, ca))
	}
	if bare, _ := http.NewRequest("GET", "/healthz", nil); spent(bare) {
		t.Error("a request with no connection record: spent")
	}
	young := &connAge{start: time.Now()}
	if spent(req(young)) {
		t.Error("a new connection's first request: spent")
	}
	if !spent(req(&connAge{start: time.Now().Add(-tcpConnLifetime - time.Second)})) {
		t.Errorf("a connection older than %s: not spent", tcpConnLifetime)
	}
}
