package cli

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestFleetTable(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hosts := []fleetHost{
		{Host: "node-a", LastSnapshot: ptr(now.Add(-41 * time.Second)), Status: ptr("ok"), Agents: ptr[int64](3),
			Zombies: ptr[int64](0), FreeMemMB: ptr[int64](3993), Kills24h: map[string]int{"leftover": 1, "max_age": 2}},
		{Host: "ip-10-0-12-231", LastSnapshot: ptr(now.Add(-(2*time.Hour + 3*time.Minute))), Status: ptr("warning"), Silent: true,
			Agents: ptr[int64](12), Zombies: ptr[int64](501), FreeMemMB: ptr[int64](812),
			Kills24h: map[string]int{"max_age": 140, "leftover": 96, "manual": 1}},
		{Host: "kills-only", Silent: true, Kills24h: map[string]int{"manual": 1}},
		{Host: "evil\x1b[2J\nnode-z\tx", LastSnapshot: ptr(now.Add(-3 * 24 * time.Hour)), Status: ptr("ok\x1b[31m"),
			Kills24h: map[string]int{"max\nage": 1}},
	}
	var b bytes.Buffer
	if err := writeFleet(&b, hosts, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := []string{
		"HOST                    SEEN     STATUS      AGENTS  ZOMBIES  FREE  KILLS 24H",
		"node-a                  41s ago  ok          3       0        3.9G  max_age 2 leftover 1",
		"ip-10-0-12-231          2h ago   SILENT      12      501      812M  max_age 140 leftover 96 manual 1",
		"kills-only              never    SILENT      -       -        -     manual 1",
		`evil\x1b[2J\nnode-z\tx  3d ago   ok\x1b[31m  -       -        -     max\nage 1`,
		"",
		"2 of 4 hosts SILENT: no snapshot for more than 3 of their summary intervals",
	}
	if len(lines) != len(want) {
		t.Fatalf("got\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	for i := range want {
		if strings.TrimRight(lines[i], " ") != want[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], want[i])
		}
	}
	if strings.ContainsAny(out, "\x1b\t") {
		t.Error("raw escape or tab from the database reached the terminal")
	}

	// A fleet of ordinary host names fits 80 columns.
	b.Reset()
	writeFleet(&b, hosts[:1], now)
	writeFleet(&b, []fleetHost{{Host: "ip-10-0-12-231", LastSnapshot: ptr(now.Add(-47 * time.Hour)), Status: ptr("warning"),
		Agents: ptr[int64](120), Zombies: ptr[int64](1000), FreeMemMB: ptr[int64](64000),
		Kills24h: map[string]int{"max_age": 99, "leftover": 99}}}, now)
	for _, l := range strings.Split(b.String(), "\n") {
		if len(l) > 80 {
			t.Errorf("%d columns: %q", len(l), l)
		}
	}

	b.Reset()
	writeFleet(&b, nil, now)
	if !strings.Contains(b.String(), "no host has written a snapshot") {
		t.Errorf("empty fleet: %q", b.String())
	}
}

func TestFleetSeen(t *testing.T) {
	now := time.Now()
	for d, want := range map[time.Duration]string{
		0: "0s ago", 59 * time.Second: "59s ago", 61 * time.Second: "1m ago", 3*time.Hour + 59*time.Minute: "3h ago",
		47 * time.Hour: "47h ago", 50 * time.Hour: "2d ago", 400 * 24 * time.Hour: "400d ago", -5 * time.Second: "0s ago",
	} {
		if got := seen(ptr(now.Add(-d)), now); got != want {
			t.Errorf("%s: %q, want %q", d, got, want)
		}
	}
	if seen(nil, now) != "never" {
		t.Error("no snapshot is not never")
	}
	for mb, want := range map[int64]string{0: "0M", 1023: "1023M", 1024: "1.0G", 15974: "15.6G"} {
		if got := memMB(&mb); got != want {
			t.Errorf("%d MB: %q, want %q", mb, got, want)
		}
	}
}

// TestFleetJSON: exactly the documented keys, null where the view has
// nothing, kills_24h an object even when empty.
func TestFleetJSON(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	err := writeFleetJSON(&b, []fleetHost{
		{Host: "a", LastSnapshot: &now, Status: ptr("ok"), Agents: ptr[int64](1), Zombies: ptr[int64](0), FreeMemMB: ptr[int64](5),
			Kills24h: map[string]int{}},
		{Host: "b", Silent: true, Kills24h: map[string]int{"manual": 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, h := range got {
		var keys []string
		for k := range h {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "agents,free_mem_mb,host,kills_24h,last_snapshot,silent,status,zombies" {
			t.Errorf("keys %v", keys)
		}
	}
	if string(got[0]["last_snapshot"]) != `"2026-12-01T12:00:00Z"` || string(got[0]["kills_24h"]) != "{}" || string(got[0]["silent"]) != "false" {
		t.Errorf("a: %s", b.String())
	}
	for _, k := range []string{"last_snapshot", "status", "agents", "zombies", "free_mem_mb"} {
		if string(got[1][k]) != "null" {
			t.Errorf("b: %s = %s, want null", k, got[1][k])
		}
	}
	if k := got[1]["kills_24h"]; strings.Join(strings.Fields(string(k)), "") != `{"manual":2}` {
		t.Errorf("b: kills_24h %s", got[1]["kills_24h"])
	}
	b.Reset()
	writeFleetJSON(&b, []fleetHost{})
	if strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no hosts: %q, want []", b.String())
	}
}
