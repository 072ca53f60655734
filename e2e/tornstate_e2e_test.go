package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-supervisor/supervisor/internal/statefile"
)

// TestIntegrationTornStateFiles: sessions.json and leases.json written by
// a real daemon (three agents, each extended through the control socket),
// then cut at several offsets or replaced by garbage. A daemon started on
// each damaged file starts, says in one warning which file and what it
// kept and dropped, moves the damaged bytes aside to NAME.damaged, restores
// the whole entries before the damage, and writes a good file again.
func TestIntegrationTornStateFiles(t *testing.T) {
	if ranApart(t) {
		return
	}
	sock := ctlSocket(t)
	state := t.TempDir()
	args := []string{"--max-age", "1h", "--control-socket", sock}
	d := startDaemon(t, append(args, "--state-dir", state)...)
	const agents = 3
	for range agents {
		a := startAgent(t, "claude")
		d.waitTracked(t, a.pid)
		mustCtl(t, sock, "extend", strconv.Itoa(a.pid), "1h")
	}
	d.stop(t) // SIGTERM: both files written
	whole := map[string][]byte{}
	for _, name := range []string{"sessions.json", "leases.json"} {
		b, err := os.ReadFile(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		whole[name] = b
	}

	type damage struct {
		file string
		data []byte
		kept int // -1: not known in advance
	}
	var cases []damage
	for name, b := range whole {
		ends := entryEnds(t, b)
		if len(ends) < agents {
			t.Fatalf("%s holds %d entries, want at least %d: %s", name, len(ends), agents, b)
		}
		for _, cut := range []int{ends[0] - 5, ends[0] + 1, len(b) / 2, len(b) - 4} {
			kept := 0
			for _, e := range ends {
				if e <= cut {
					kept++
				}
			}
			cases = append(cases, damage{name, b[:cut], kept})
		}
		cases = append(cases, damage{name, []byte("\x00\x00\xff garbage {\"boot_id\": [[["), 0},
			damage{name, bytes.Repeat([]byte{0}, len(b)), 0})
	}
	keptOf := map[string][]string{}
	for i, c := range cases {
		dir := t.TempDir()
		path := filepath.Join(dir, c.file)
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t, append(args, "--state-dir", dir, "--control-socket", ctlSocket(t))...)
		warn := d.waitLog(t, 20*time.Second, func(m map[string]any) bool {
			return m["level"] == "warn" && strings.HasPrefix(fmt.Sprint(m["msg"]), c.file+" damaged")
		})
		d.stop(t)
		what := fmt.Sprintf("case %d: %s cut to %d of %d bytes", i, c.file, len(c.data), len(whole[c.file]))
		if warns := d.findLogs(func(m map[string]any) bool {
			return m["level"] == "warn" && strings.Contains(fmt.Sprint(m["msg"]), c.file)
		}); len(warns) != 1 {
			t.Errorf("%s: %d warnings about it, want one: %v", what, len(warns), warns)
		}
		if warn["file"] != path || num(warn["kept"]) != int64(c.kept) || num(warn["size"]) != int64(len(c.data)) ||
			num(warn["damaged_at"]) > int64(len(c.data)) || warn["moved_to"] != path+".damaged" {
			t.Errorf("%s: warning %v; want the file, %d entries kept, the size and where the damage is", what, warn, c.kept)
		}
		// Entries, not bytes: a file's size moves with its PIDs' digits,
		// and the table is checked against this line on every run.
		keptOf[c.file] = append(keptOf[c.file], fmt.Sprintf("%d kept", num(warn["kept"])))
		if b, err := os.ReadFile(path + ".damaged"); err != nil || !bytes.Equal(b, c.data) {
			t.Errorf("%s: the damaged bytes were not kept aside: %v", what, err)
		}
		if c.kept > 0 && c.file == "leases.json" {
			if m := d.findLogs(func(m map[string]any) bool { return m["msg"] == "leases restored" }); len(m) != 1 || num(m[0]["processes"]) != int64(c.kept) {
				t.Errorf("%s: %v; want the %d leases kept restored", what, m, c.kept)
			}
		}
		// A good file again, from what the daemon kept (the sessions from
		// its scan, the leases it restored).
		var got []json.RawMessage
		if err := statefile.Load(path, &got); err != nil {
			t.Errorf("%s: after the daemon stopped: %v", what, err)
		} else if c.file == "leases.json" && len(got) != c.kept {
			t.Errorf("%s: %d leases saved, want the %d kept", what, len(got), c.kept)
		}
	}
	for _, name := range []string{"sessions.json", "leases.json"} {
		recordFault(t, faultRow{
			Fault:    name + " torn or garbage",
			Produced: "a real daemon's file cut at 4 offsets, NUL-filled, or replaced by garbage; then a daemon started on it",
			Did: "started every time; one warning naming the file, the entries kept and the bytes dropped; whole entries before the damage restored (" +
				strings.Join(keptOf[name], ", ") + "); damaged bytes moved to " + name + ".damaged; a good file written again",
		})
	}
}

// entryEnds returns the offsets just after each entry of a state file's
// data array.
func entryEnds(t *testing.T, b []byte) []int {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var ends []int
	depth, inData := 0, false
	for {
		tok, err := dec.Token()
		if err != nil {
			return ends
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
			if inData && depth == 2 {
				ends = append(ends, int(dec.InputOffset()))
			}
		case "data":
			inData = depth == 1
		}
	}
}
