package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func rec(kind string, created time.Time) Record {
	r := Record{Kind: kind, ID: NewID(), Host: "h", Created: created}
	if kind == KindKill {
		r.Kill = &KillRow{PID: 1}
	} else {
		r.Snapshot = &SnapshotRow{CheckType: CheckType, Status: "ok", Details: []byte(`{}`)}
	}
	return r
}

func TestSpoolSurvivesReopenAndTornWrite(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var ids []string
	for i := range 5 {
		r, err := s.Append(rec(KindSnapshot, now.Add(time.Duration(i))))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The daemon died in the middle of a write.
	f, _ := os.OpenFile(filepath.Join(dir, spoolFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":6,"kind":"snap`)
	f.Close()

	s, err = OpenSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Records()
	if len(got) != 3 || got[0].ID != ids[2] || got[2].ID != ids[4] || got[0].Seq != 3 {
		t.Fatalf("after reopen: %+v", got)
	}
	if !got[0].Created.Equal(now.Add(2)) {
		t.Errorf("created %v, want the original time", got[0].Created)
	}
	r, err := s.Append(rec(KindKill, now))
	if err != nil || r.Seq != 6 {
		t.Fatalf("append after the torn line: seq %d, %v", r.Seq, err)
	}
	s.Close()
	s, _ = OpenSpool(dir, 100)
	if n := s.Len(); n != 4 {
		t.Errorf("%d records after a second reopen, want 4", n)
	}
	s.Close()
}

func TestSpoolBoundDropsSnapshotsFirst(t *testing.T) {
	s := openSpool(t, t.TempDir(), 3)
	now := time.Now()
	s.Append(rec(KindKill, now))
	s.Append(rec(KindSnapshot, now))
	s.Append(rec(KindKill, now))
	s.Append(rec(KindSnapshot, now)) // over the bound: the older snapshot goes
	kinds := ""
	for _, r := range s.Records() {
		kinds += r.Kind[:1]
	}
	if kinds != "kks" || s.Dropped() != 1 {
		t.Fatalf("kept %q, dropped %d; want kks, 1", kinds, s.Dropped())
	}
	s.Append(rec(KindKill, now)) // drops the remaining snapshot, not a kill
	s.Append(rec(KindKill, now)) // only kills left: the oldest kill goes
	kinds = ""
	for _, r := range s.Records() {
		kinds += r.Kind[:1]
	}
	if kinds != "kkk" || s.Dropped() != 3 {
		t.Fatalf("kept %q, dropped %d; want kkk, 3", kinds, s.Dropped())
	}
}

func TestSpoolPrune(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 10)
	now := time.Now()
	s.Append(rec(KindSnapshot, now.Add(-48*time.Hour)))
	s.Append(rec(KindKill, now.Add(-47*time.Hour)))
	s.Append(rec(KindSnapshot, now))
	if n, err := s.Prune(now.Add(-24 * time.Hour)); n != 2 || err != nil {
		t.Fatalf("pruned %d, %v", n, err)
	}
	s.Close()
	s, _ = OpenSpool(dir, 10)
	defer s.Close()
	if s.Len() != 1 {
		t.Errorf("%d records after prune and reopen, want 1", s.Len())
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if len(a) != 36 || a == b || a[14] != '4' {
		t.Errorf("ids %s %s", a, b)
	}
}

// Many goroutines appending at once share fsyncs; every record they were
// told is durable is held, in sequence order, and survives a reopen, and
// each pending record replaced by its complete one leaves only the latter.
func TestSpoolGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 100000)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 50
	now := time.Now().UTC()
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				r := rec(KindKill, now)
				r.Kill.PID = int32(w*each + i)
				r.Kill.Outcome = OutcomePending
				p, err := s.Append(r)
				if err != nil {
					errs <- err
					return
				}
				r.Kill.Outcome = "killed"
				r.ID = p.ID
				if _, err := s.Replace(r); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	check := func(recs []Record, what string) {
		t.Helper()
		if len(recs) != writers*each {
			t.Fatalf("%s: %d records, want %d", what, len(recs), writers*each)
		}
		seen := map[int32]bool{}
		for i, r := range recs {
			if i > 0 && r.Seq <= recs[i-1].Seq {
				t.Fatalf("%s: record %d has seq %d after %d", what, i, r.Seq, recs[i-1].Seq)
			}
			if r.Kill.Outcome != "killed" || seen[r.Kill.PID] {
				t.Fatalf("%s: record %+v: pending not replaced, or twice", what, r.Kill)
			}
			seen[r.Kill.PID] = true
		}
	}
	check(s.Records(), "in memory")
	s.Close()
	s = openSpool(t, dir, 100000)
	check(s.Records(), "after reopen")
}

// A failed fsync holds every append its line was waiting on in memory
// (their lines cut back) and never loses one: every append returns nil,
// and after WriteHeld and a reopen every record is in the spool, none
// damaged.
func TestSpoolFailedFsyncSettlesEveryWaiter(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 100000)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var calls atomic.Int32
	fsync = func(f *os.File) error {
		if calls.Add(1) == 1 {
			<-release // the first fsync waits for the others to write, then fails
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	defer func() { fsync = (*os.File).Sync }()

	type result struct {
		id  string
		err error
	}
	results := make(chan result, 64)
	now := time.Now().UTC()
	go func() {
		r, err := s.Append(rec(KindKill, now))
		results <- result{r.ID, err}
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond) // the first writer is inside its fsync
	}
	const more = 20
	for range more {
		go func() {
			r, err := s.Append(rec(KindKill, now))
			results <- result{r.ID, err}
		}()
	}
	for s.waitingLen() < more+1 {
		time.Sleep(time.Millisecond) // all written, waiting for the first fsync
	}
	close(release)
	ok, failed := map[string]bool{}, 0
	for range more + 1 {
		r := <-results
		if r.err == nil {
			ok[r.id] = true
		} else {
			failed++
		}
	}
	if failed != 0 || s.Held() != more+1 || s.Fault() == nil {
		t.Errorf("%d of %d appends failed, %d held (fault %v); want none failed, all held", failed, more+1, s.Held(), s.Fault())
	}
	r, err := s.Append(rec(KindKill, now))
	if err != nil {
		t.Fatalf("append after the failure: %v", err)
	}
	ok[r.ID] = true
	if n, err := s.WriteHeld(); err != nil || n != more+2 {
		t.Fatalf("WriteHeld: %d, %v", n, err)
	}
	s.Close()
	s = openSpool(t, dir, 100000)
	got := map[string]bool{}
	for _, r := range s.Records() {
		got[r.ID] = true
		if !ok[r.ID] {
			t.Errorf("record %s is in the spool, but no append returned it", r.ID)
		}
	}
	for id := range ok {
		if !got[id] {
			t.Errorf("record %s was reported durable and is gone", id)
		}
	}
	if n, _ := s.LoadDamage(); n != 0 {
		t.Errorf("%d damaged lines after the cut-back", n)
	}
}

// TestStoreDiskFaultOnce: a disk that fails every fsync holds the rows,
// warns once for the cause however many rows come, names it in Faults,
// and once it recovers writeHeld writes them out and the fault is over.
func TestStoreDiskFaultOnce(t *testing.T) {
	dir := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	st, sp := spooled(t, dir, Config{Host: "h", Log: zap.New(core)})
	fsync = func(*os.File) error { return syscall.EIO }
	defer func() { fsync = (*os.File).Sync }()
	now := time.Now()
	for range 5 {
		if _, err := st.Add(KindKill, now, nil, &KillRow{PID: 7, Outcome: "killed"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.FilterMessageSnippet("the disk refuses writes (input/output error)").Len(); n != 1 {
		t.Errorf("%d disk warnings, want 1: %v", n, logs.All())
	}
	if f := st.Faults(); len(f) != 1 || !strings.Contains(f[0], "input/output error") || sp.Held() != 5 {
		t.Errorf("faults %q, held %d; want the EIO named, 5 held", f, sp.Held())
	}
	if st.writeHeld() {
		t.Fatal("written out while every fsync fails")
	}
	fsync = (*os.File).Sync
	if !st.writeHeld() || len(st.Faults()) != 0 || sp.Held() != 0 {
		t.Fatalf("after recovery: faults %q, held %d", st.Faults(), sp.Held())
	}
	if logs.FilterMessageSnippet("the disk takes writes again").Len() != 1 {
		t.Errorf("recovery not said once: %v", logs.All())
	}
	recs, _, err := ReadSpool(dir)
	if err != nil || len(recs) != 5 {
		t.Fatalf("spool after recovery: %d records, %v; want 5", len(recs), err)
	}
}
