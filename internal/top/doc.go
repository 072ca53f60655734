// Package top is `supervisor top`: a live full-screen view of every agent
// session the running daemon tracks (bubbletea, bubbles, lipgloss), with
// extend, keep and kill at hand, and its batch forms (--once, --json, or
// stdout not a terminal).
//
// Its data is the daemon's own, read the way status and events read it:
// one GET /healthz and one GET /agents a second on the API socket (with
// ?members= for the sessions expanded, at most api.MaxMemberSessions), one
// GET /events?types=kill stream for the last kills (seeded, once the
// stream is open, from GET /kills, the daemon's last ones; opened again
// with backoff when it ends), and the control socket
// for the actions (source.go). The model (model.go) is pure state and
// keys; the frame (view.go) is a function of the model, its size and
// whether colour is on, so it is tested as text (golden frames).
//
// What it prints of a process (names, command lines) is escaped: a
// process chooses its own name. It may import config (flags and socket
// paths), api (the views it decodes), control (the control protocol),
// events and store (the kill rows); never cli (a sibling) or the daemon's
// assembly.
package top
