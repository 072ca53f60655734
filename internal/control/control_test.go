package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDecodeRequest(t *testing.T) {
	for _, c := range []struct {
		in, err string
		want    Request
	}{
		{in: `{"cmd":"extend","pid":12,"duration":"1h"}`, want: Request{Cmd: "extend", PID: 12, Duration: "1h"}},
		{in: `{"cmd":"kill","pid":12,"force":true}`, want: Request{Cmd: "kill", PID: 12, Force: true}},
		{in: `{"cmd":"reload"}`, want: Request{Cmd: "reload"}},
		{in: `{"cmd":"kill","pid":12,"start":"2026-11-27T16:23:24.51621768Z"}`, want: Request{Cmd: "kill", PID: 12, Start: "2026-11-27T16:23:24.51621768Z"}},
		{in: `{"cmd":"kill","pid":12,"start":"yesterday"}`, err: "not an RFC 3339 time"},
		{in: `{"cmd":"reload","start":"2026-11-27T16:23:24Z"}`, err: "takes no start"},
		{in: `{"cmd":"keep"}`, err: "positive pid"},
		{in: `{"cmd":"keep","pid":-3}`, err: "positive pid"},
		{in: `{"cmd":"format","pid":3}`, err: "unknown command"},
		{in: `{"pid":3}`, err: "no cmd"},
		{in: `{"cmd":"keep","pid":3,"bogus":1}`, err: "unknown field"},
		{in: `{"cmd":"keep","pid":3}{"cmd":"kill","pid":3}`, err: "more than one"},
		{in: `{"cmd":"keep","pid":"3"}`, err: "malformed"},
		{in: `not json`, err: "malformed"},
		{in: ``, err: "malformed"},
		{in: `{"cmd":"keep","pid":99999999999}`, err: "malformed"},
		{in: `{"cmd":"reload","until":"` + strings.Repeat("x", MaxRequest) + `"}`, err: "larger than"},
	} {
		got, err := DecodeRequest([]byte(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%.60s: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"cmd":"extend","pid":12,"duration":"1h"}`))
	f.Add([]byte(`{"cmd":"kill","pid":1,"force":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err == nil && r.Cmd != CmdReload && r.PID <= 0 {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func TestAuthorized(t *testing.T) {
	for _, c := range []struct {
		p     Peer
		group int
		want  bool
	}{
		{Peer{UID: 0}, NoGroup, true},
		{Peer{UID: 0, GID: 5}, 7, true},
		{Peer{UID: 1000, GID: 1000}, NoGroup, false},
		{Peer{UID: 1000, GID: 1000, Groups: []uint32{0}}, NoGroup, false}, // group 0 is not root
		{Peer{UID: 1000, GID: 7}, 7, true},
		{Peer{UID: 1000, GID: 1000, Groups: []uint32{4, 7}}, 7, true},
		{Peer{UID: 1000, GID: 1000, Groups: []uint32{4, 8}}, 7, false},
		{Peer{UID: 65534, GID: 65534}, 0, false},
	} {
		if got := Authorized(c.p, c.group); got != c.want {
			t.Errorf("Authorized(%+v, %d) = %v", c.p, c.group, got)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := []byte("Name:\tbash\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 \n")
	g, err := parseStatusGroups(status)
	if err != nil || len(g) != 3 || g[0] != 4 || g[2] != 27 {
		t.Errorf("groups %v %v", g, err)
	}
	if g, err := parseStatusGroups([]byte("Groups:\t\n")); err != nil || len(g) != 0 {
		t.Errorf("no groups: %v %v", g, err)
	}
	if _, err := parseStatusGroups([]byte("Groups:\tx\n")); err == nil {
		t.Error("bad gid accepted")
	}
	if _, err := parseStatusGroups([]byte("Name:\tx\n")); err == nil {
		t.Error("missing Groups: accepted")
	}
	if err := checkStatusUID(status, 1001); err != nil {
		t.Errorf("effective uid 1001: %v", err)
	}
	if err := checkStatusUID(status, 1000); err == nil {
		t.Error("real uid taken for the effective one")
	}
}

// The server end to end, as the current user (root in CI: the peer check
// passes; the refusal of another user is tested with runuser in
// cmd/supervisor's control tests).
func TestServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: the peer check passes only for root (or the control group); run as root")
	}
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "control.sock")
	var got []Request
	s, err := Listen(Config{Path: path, Group: NoGroup, Handler: func(p Peer, r Request) Response {
		if p.UID != 0 || p.PID != int32(os.Getpid()) {
			return Errorf("peer %+v", p)
		}
		got = append(got, r)
		if r.Cmd == CmdKill {
			panic("boom")
		}
		return Response{Message: "done " + r.Cmd}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	if fi, _ := os.Lstat(path); fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Call(ctx, path, Request{Cmd: CmdKeep, PID: 42})
	if err != nil || !resp.OK || resp.Message != "done keep" {
		t.Fatalf("keep: %+v %v", resp, err)
	}
	// A handler that panics: an error answer, and the server goes on.
	if resp, err := Call(ctx, path, Request{Cmd: CmdKill, PID: 42}); err != nil || resp.OK || resp.Error != "internal error" {
		t.Errorf("panicking handler: %+v %v", resp, err)
	}
	// Malformed, oversized and silent clients get an error line.
	for _, raw := range []string{"garbage\n", strings.Repeat("x", MaxRequest+10)} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(raw))
		r, err := readResponse(c)
		c.Close()
		if err != nil || r.Error == "" {
			t.Errorf("%.20q: answer %+v %v", raw, r, err)
		}
	}
	if resp, err := Call(ctx, path, Request{Cmd: CmdReload}); err != nil || !resp.OK {
		t.Fatalf("after bad clients: %+v %v", resp, err)
	}
	if len(got) != 3 {
		t.Errorf("handler saw %d requests, want 3", len(got))
	}
	// A second server on a live socket: an error naming it.
	if _, err := Listen(Config{Path: path, Group: NoGroup, Handler: nil}); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("second server: %v", err)
	}
	s.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := Call(ctx, path, Request{Cmd: CmdReload}); err == nil {
		t.Error("call after Close succeeded")
	}
	// A stale socket file (its daemon died without removing it) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: %v", err)
	}
	s2, err := Listen(Config{Path: path, Group: 4242, Handler: func(Peer, Request) Response { return Response{} }})
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer s2.Close()
	if fi, _ := os.Lstat(path); fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
		t.Errorf("with a group: mode %v gid %d, want 0660 and the group", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	// A directory made for a group: the group may search it, no more.
	gpath := filepath.Join(t.TempDir(), "grun", "control.sock")
	s3, err := Listen(Config{Path: gpath, Group: 4242, Handler: func(Peer, Request) Response { return Response{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if fi, _ := os.Stat(filepath.Dir(gpath)); fi.Mode().Perm() != 0o710 || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
		t.Errorf("directory made for a group: mode %v gid %d, want 0710 and the group", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	// Not a socket: refused.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, err := Listen(Config{Path: plain, Group: NoGroup}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
}

// The socket's directory must be ours alone: a symlink, a directory another
// user owns or one anyone may write to is refused before anything is
// created, chmodded or removed in it.
func TestListenRefusesUnsafeDir(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777) // past the umask
	link := filepath.Join(base, "link")
	os.Symlink(open, link)
	for _, dir := range []string{open, link} {
		if ln, _, err := listen(filepath.Join(dir, "control.sock"), -1); err == nil {
			ln.Close()
			t.Errorf("listen in %s: no error", dir)
		}
	}
	if ents, _ := os.ReadDir(open); len(ents) != 0 {
		t.Errorf("files created in the refused directory: %v", ents)
	}
}
