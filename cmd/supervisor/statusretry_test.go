package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// status shows a retrying process as such, with its attempt and when the
// next one comes, and how many kills are retrying.
func TestPrintStatusRetrying(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	next := now.Add(4 * time.Second)
	agents := []agentView{{PID: 4242, Comm: "claude", StartedAt: now.Add(-2 * time.Hour), Deadline: now.Add(-30 * time.Second),
		SecondsLeft: -30, Reason: "max_age", SessionPID: 4242, State: "retrying", Attempt: 3, NextAttempt: &next}}
	var b bytes.Buffer
	printStatus(&b, "127.0.0.1:9847", healthView{Source: "netlink", MaxAge: "2h0m0s", Database: "none", Retrying: 1}, agents, now)
	out := b.String()
	for _, want := range []string{"1 kills retrying", "4242  claude", "retrying", "retry 3 in 4.0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > statusWidth {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
}
