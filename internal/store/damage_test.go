package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func line(t *testing.T, r Record) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal %+v: %v", r, err)
	}
	return string(b)
}

// TestSpoolDamageSetAside: a torn line in the middle, a torn write that
// the next record followed on the same line, garbage, valid JSON that is
// no record, and a last line without a newline: every good record is
// kept, in order; each bad piece goes to spool.bad byte for byte; the
// spool is rewritten clean, so a second open finds nothing; ReadSpool sees
// the same records without writing.
func TestSpoolDamageSetAside(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	var good []Record
	for i := range 5 {
		r := rec(KindSnapshot, now)
		if i == 3 {
			r = rec(KindKill, now)
		}
		r.Seq = uint64(i + 1)
		good = append(good, r)
	}
	torn := `{"seq":9,"kind":"snapshot","id":"x","sna`
	glued := `{"seq":10,"kind":"ki`
	garbage := "\x00\x00\xff garbage"
	notRecord := `{"seq":11,"kind":"snapshot"}`
	tail := `{"seq":12,"kind":"kill","id":"y","ki`
	content := line(t, good[0]) + "\n" + torn + "\n" + line(t, good[1]) + "\n" +
		glued + line(t, good[2]) + "\n" + garbage + "\n" + notRecord + "\n" + line(t, good[3]) + "\n" +
		line(t, good[4]) + "\n" + tail
	if err := os.WriteFile(filepath.Join(dir, spoolFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := func(rs []Record) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.ID)
		}
		return strings.Join(s, ",")
	}

	read, bad, err := ReadSpool(dir)
	if err != nil || ids(read) != ids(good) || bad != 4 { // the tail may be a write in progress
		t.Fatalf("ReadSpool: %d records, %d bad, %v; want %d and 4", len(read), bad, err, len(good))
	}
	if _, err := os.Stat(filepath.Join(dir, badFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadSpool wrote %s", badFile)
	}

	s, err := OpenSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Records(); ids(got) != ids(good) {
		t.Fatalf("kept %s, want %s", ids(got), ids(good))
	}
	if n, err := s.LoadDamage(); n != 5 || err != nil || s.Bad() != 5 {
		t.Errorf("damage %d, %v, bad %d; want 5 lines", n, err, s.Bad())
	}
	setAside, _ := os.ReadFile(filepath.Join(dir, badFile))
	for _, piece := range []string{torn, glued, garbage, notRecord, tail} {
		if !bytes.Contains(setAside, []byte("\n"+piece+"\n")) {
			t.Errorf("spool.bad lacks %q:\n%s", piece, setAside)
		}
	}
	r, err := s.Append(rec(KindKill, now))
	if err != nil || r.Seq != 6 {
		t.Fatalf("append after damage: seq %d, %v; want 6", r.Seq, err)
	}
	s.Close()

	s = openSpool(t, dir, 100)
	if n, _ := s.LoadDamage(); n != 0 || s.Len() != len(good)+1 {
		t.Errorf("second open: %d damaged, %d records; want 0, %d", n, s.Len(), len(good)+1)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, badFile)); !bytes.Equal(after, setAside) {
		t.Errorf("spool.bad changed at the second open")
	}
}

// TestSpoolFailedAppendCutBack: a write that runs into the file size limit
// (RLIMIT_FSIZE: the kernel writes up to the limit, then EFBIG, as on a
// full disk) leaves a partial line; Append cuts it off and holds the record
// in memory (Fault says why), and so every record after it, writing
// nothing, until WriteHeld rewrites the file: the next open finds a clean
// file with every record.
func TestSpoolFailedAppendCutBack(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, 100)
	now := time.Now()
	for range 3 {
		if _, err := s.Append(rec(KindSnapshot, now)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, spoolFile)
	st, _ := os.Stat(path)
	before := st.Size()

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(before + 20) // room for part of a line (Go ignores SIGXFSZ)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	_, aerr := s.Append(rec(KindKill, now))
	if aerr != nil || !errors.Is(s.Fault(), syscall.EFBIG) {
		syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
		t.Fatalf("append over the limit: %v, fault %v; want nil, EFBIG", aerr, s.Fault())
	}
	if st, _ := os.Stat(path); st.Size() != before {
		t.Fatalf("file is %d bytes after the failed append, want %d (cut back)", st.Size(), before)
	}
	r, err := s.Append(rec(KindKill, now)) // held, not written
	if err != nil || r.Seq != 5 {
		t.Fatalf("next append: seq %d, %v; want 5", r.Seq, err)
	}
	if s.Len() != 5 || s.Held() != 2 {
		t.Fatalf("%d records, %d held; want 5, 2", s.Len(), s.Held())
	}
	if n, err := s.WriteHeld(); err == nil {
		t.Fatalf("WriteHeld under the limit wrote %d rows", n)
	}
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if n, err := s.WriteHeld(); err != nil || n != 2 || s.Held() != 0 || s.Fault() != nil {
		t.Fatalf("WriteHeld: %d, %v; held %d, fault %v", n, err, s.Held(), s.Fault())
	}
	r, err = s.Append(rec(KindKill, now))
	if err != nil || r.Seq != 6 || s.Held() != 0 {
		t.Fatalf("append after recovery: seq %d, %v, held %d", r.Seq, err, s.Held())
	}
	s.Close()
	s2 := openSpool(t, dir, 100)
	if n, _ := s2.LoadDamage(); n != 0 || s2.Len() != 6 {
		t.Errorf("reopen: %d damaged, %d records; want 0, 6", n, s2.Len())
	}
}

// TestSpoolHeldBound: records held in memory keep the spool's bound, the
// oldest snapshots dropped first and kills last, counted.
func TestSpoolHeldBound(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, 4)
	fsync = func(*os.File) error { return errors.New("injected EIO") }
	defer func() { fsync = (*os.File).Sync }()
	now := time.Now()
	for _, k := range []string{KindKill, KindSnapshot, KindKill, KindSnapshot, KindKill, KindSnapshot} {
		if _, err := s.Append(rec(k, now)); err != nil {
			t.Fatal(err)
		}
	}
	kinds := ""
	for _, r := range s.Records() {
		kinds += r.Kind[:1]
	}
	if kinds != "kkks" || s.Dropped() != 2 || s.Held() != 4 {
		t.Fatalf("held %q (%d), dropped %d; want kkks, 4, 2", kinds, s.Held(), s.Dropped())
	}
}

// TestSpoolReplace: a later record with an id supersedes the undelivered
// earlier one, in memory, after a reopen and for ReadSpool; after the
// earlier one was delivered, the later one is simply delivered too.
func TestSpoolReplace(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 100)
	now := time.Now()
	pending := rec(KindKill, now)
	pending.Kill.Outcome = OutcomePending
	p, _ := s.Append(pending)
	s.Append(rec(KindSnapshot, now))
	done := pending
	done.Kill = &KillRow{PID: 1, Outcome: "killed"}
	if _, err := s.Replace(done); err != nil {
		t.Fatal(err)
	}
	check := func(what string, rs []Record) {
		t.Helper()
		n := 0
		for _, r := range rs {
			if r.ID == p.ID {
				n++
				if r.Kill.Outcome != "killed" {
					t.Errorf("%s: outcome %q, want the complete row", what, r.Kill.Outcome)
				}
			}
		}
		if n != 1 || len(rs) != 2 {
			t.Errorf("%s: %d records, %d with the id; want 2, 1", what, len(rs), n)
		}
	}
	check("memory", s.Records())
	read, _, _ := ReadSpool(dir)
	check("ReadSpool", read)
	s.Close()
	s, _ = OpenSpool(dir, 100)
	check("reopened", s.Records())

	// Delivered, then replaced: the new record is held.
	second := rec(KindKill, now)
	second.Kill.Outcome = OutcomePending
	r, _ := s.Append(second)
	if err := s.Ack(r.Seq); err != nil {
		t.Fatal(err)
	}
	second.Kill = &KillRow{Outcome: "terminated"}
	s.Replace(second)
	if rs := s.Records(); len(rs) != 1 || rs[0].ID != second.ID || rs[0].Kill.Outcome != "terminated" {
		t.Errorf("after ack and replace: %+v", rs)
	}
	s.Close()
}

// TestSpoolBoundAcrossReopen: drops happen in memory; the file holds them
// as garbage until a rewrite, and a reopen applies the bound again, so the
// same rows are held.
func TestSpoolBoundAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 50)
	now := time.Now()
	for i := range 130 {
		kind := KindSnapshot
		if i%10 == 0 {
			kind = KindKill
		}
		if _, err := s.Append(rec(kind, now)); err != nil {
			t.Fatal(err)
		}
	}
	want := s.Records()
	if len(want) != 50 || s.Dropped() != 80 {
		t.Fatalf("%d held, %d dropped; want 50, 80", len(want), s.Dropped())
	}
	kills := 0
	for _, r := range want {
		if r.Kind == KindKill {
			kills++
		}
	}
	if kills != 13 {
		t.Errorf("%d kills held, want all 13", kills)
	}
	s.Close()
	s, _ = OpenSpool(dir, 50)
	defer s.Close()
	got := s.Records()
	for i := range want {
		if i >= len(got) || got[i].ID != want[i].ID {
			t.Fatalf("after reopen record %d differs (%d held)", i, len(got))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d after reopen, want %d", len(got), len(want))
	}
}

func TestSanitize(t *testing.T) {
	action := "Killed\x00 PIDs \xff"
	r := Record{Kind: KindKill, Host: "h\x00ost\xc3", Kill: &KillRow{
		Comm: "cl\xffaude", Cmdline: strings.Repeat("é", 3000) + "\x00", Outcome: "killed"}}
	sanitize(&r)
	if r.Host != "host\uFFFD" || r.Kill.Comm != "cl\uFFFDaude" {
		t.Errorf("host %q comm %q", r.Host, r.Kill.Comm)
	}
	if c := r.Kill.Cmdline; len(c) > MaxCmdline || !utf8.ValidString(c) || len(c) != 4096 {
		t.Errorf("cmdline %d bytes, valid %v; want 4096 (é is 2 bytes)", len(c), utf8.ValidString(c))
	}
	if c := capBytes("aé", 2); c != "a" {
		t.Errorf("capBytes cut inside a rune: %q", c)
	}
	s := Record{Kind: KindSnapshot, Snapshot: &SnapshotRow{Status: "ok", ActionTaken: &action,
		Details: json.RawMessage(`{"a\u0000":"x\u0000y","n":12345678901234567890,"l":["\ud800", "<&>"],"b":"` + "\xff" + `"}`)}}
	sanitize(&s)
	if *s.Snapshot.ActionTaken != "Killed PIDs \uFFFD" {
		t.Errorf("action %q", *s.Snapshot.ActionTaken)
	}
	if d := string(s.Snapshot.Details); d != `{"a":"xy","b":"`+"\uFFFD"+`","l":["`+"\uFFFD"+`","<&>"],"n":12345678901234567890}` {
		t.Errorf("details %s", d)
	}
	plain := json.RawMessage(`{"zombie_count":3}`)
	if got := cleanJSON(plain); &got[0] != &plain[0] {
		t.Errorf("clean details were re-encoded")
	}
}

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	release, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock(2) locks belong to the open file description: a second open,
	// even in this process, conflicts.
	_, err = LockDir(dir)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != os.Getpid() {
		t.Fatalf("second lock: %v, want a LockedError naming PID %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), "PID ") {
		t.Errorf("message %q does not name the PID", err)
	}
	release()
	release2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}
