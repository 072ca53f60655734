package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/events"
	"github.com/agent-supervisor/supervisor/internal/testutil"
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
	testutil.Accept(ln, func(c net.Conn) {
		verdicts <- verdict{from: remoteIP(c.RemoteAddr()), ok: true, conn: c}
	})
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
	if !spent(req(&connAge{start: time.Now().Add(-TCPConnLifetime - time.Second)})) {
		t.Errorf("a connection older than %s: not spent", TCPConnLifetime)
	}
}

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

// The API socket's caps: root's connections are its own, a member's are
// few and the members' together bounded, peers without access get a few
// slots of their own; /events streams per member are few and root's are
// kept apart.
func TestAPIAdmit(t *testing.T) {
	var a apiState
	var rel []func()
	take := func(uid uint32, ok bool) bool {
		r, _ := a.admit(uid, ok)
		if r != nil {
			rel = append(rel, r)
		}
		return r != nil
	}
	for i := range apiConnsPerUID {
		if !take(1000, true) {
			t.Fatalf("member connection %d refused", i)
		}
	}
	if take(1000, true) {
		t.Errorf("a member got more than %d connections", apiConnsPerUID)
	}
	for uid := uint32(1001); take(uid, true); uid++ {
	}
	if n := a.groupConns; n != APIGroupConns {
		t.Errorf("members hold %d connections, want the cap %d", n, APIGroupConns)
	}
	for i := range apiForbiddenConns {
		if !take(2000+uint32(i), false) {
			t.Fatalf("forbidden peer %d not answered", i)
		}
	}
	if take(3000, false) {
		t.Errorf("more than %d peers without access held connections", apiForbiddenConns)
	}
	for i := range apiRootConns {
		if !take(0, true) {
			t.Fatalf("root's connection %d refused while the members hold theirs", i)
		}
	}
	if take(0, true) {
		t.Errorf("root past its own cap")
	}
	for _, r := range rel {
		r()
		r() // once only
	}
	if a.groupConns != 0 || a.rootConns != 0 || a.forbidden != 0 || len(a.uidConns) != 0 {
		t.Errorf("slots left after release: %+v", &a)
	}

	var streams []func()
	for uid := uint32(1000); ; uid++ {
		n := 0
		for {
			r := a.stream(uid)
			if r == nil {
				break
			}
			streams = append(streams, r)
			n++
		}
		if n == 0 {
			break
		}
		if n > APIStreamsPerUID {
			t.Fatalf("uid %d got %d streams", uid, n)
		}
	}
	if a.streams != events.MaxSubscribers-apiRootStreams {
		t.Errorf("members hold %d streams, want %d", a.streams, events.MaxSubscribers-apiRootStreams)
	}
	if a.stream(0) == nil {
		t.Error("root refused a stream")
	}
	for _, r := range streams {
		r()
		r()
	}
	if a.streams != 0 || len(a.uidStreams) != 0 {
		t.Errorf("streams left after release: %d %v", a.streams, a.uidStreams)
	}
}
