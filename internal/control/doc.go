// Package control serves the daemon's control socket: a unix socket on
// which root (or a member of one group) asks the daemon to change an
// agent's fate — extend, keep, unkeep, kill now, reload.
//
// Every state change goes through here, never through the HTTP listener,
// which stays read-only. The socket file is created mode 0600 (0660 with
// the control group as its group) in a directory created 0700, and each
// accepted connection's peer is checked from the kernel's credentials
// (SO_PEERCRED, SO_PEERGROUPS; unix(7)), taken at connect(2): the file mode
// is one fence, the peer check the other, so a socket whose mode was
// loosened still refuses an unprivileged caller.
//
// The protocol is one JSON request line and one JSON response line per
// connection: {"cmd":"extend","pid":1234,"duration":"1h"} answered by
// {"ok":true,"message":"..."} or {"error":"..."}. Requests are bounded in
// size (MaxRequest) and time (ReadTimeout); a malformed one gets an error
// line, never takes the daemon down.
package control
