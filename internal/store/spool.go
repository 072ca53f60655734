package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Spool is an append-only, fsynced file of records not yet delivered (or,
// without a database, kept). A record is durable once Append returns.
//
// Files in the directory: spool.jsonl (one JSON record a line), spool.ack
// (the highest sequence number delivered) and spool.bad (lines that were
// not valid records and rows PostgreSQL refused, each after a "#" line
// saying why). Delivered, dropped and superseded records stay in
// spool.jsonl as garbage until it is rewritten (write, fsync, rename),
// which happens once garbage outweighs the records held, so the cost of
// a rewrite is spread over as many rows as it removes.
type Spool struct {
	mu      sync.Mutex
	dir     string
	f       *os.File // O_APPEND
	size    int64    // bytes of whole lines; a failed append is cut back to it
	torn    bool     // a failed append could not be cut back yet
	needNL  bool     // the file ends in a damaged line without a newline
	recs    []Record // undelivered, in sequence order, one per id
	next    uint64
	acked   uint64
	max     int
	dropped uint64
	bad     uint64 // lines and rows set aside in spool.bad since open
	loadBad int    // of which found damaged by OpenSpool
	loadErr error  // writing spool.bad or rewriting the spool at open
	garbage int    // lines in the file that are no longer in recs
	notify  chan struct{}

	// The disk failing (full, read-only, fsync errors) never loses a row:
	// from the first record that could not be made durable (heldFrom, its
	// seq; 0 when none) on, records are held in memory only, under the
	// same bound, until WriteHeld rewrites the file with everything held.
	// Meanwhile nothing is written to the file. fault is the error that
	// started it (or the ack file that could not be written: ackDirty);
	// nil when the disk is fine.
	heldFrom uint64
	ackDirty bool
	fault    error

	// Group commit (see Append). Tickets number written lines; all
	// guarded by mu, except that syncMu serialises the fsyncs.
	syncMu     sync.Mutex
	waiting    []unsynced // written, not yet known durable, in ticket order
	ticket     uint64     // last line written
	syncedSize int64      // file size known durable
}

const (
	spoolFile = "spool.jsonl"
	ackFile   = "spool.ack"
	badFile   = "spool.bad"
	// compactMin is the garbage below which the file is never rewritten
	// while it still holds records.
	compactMin = 64
)

// OpenSpool opens (creating) the spool in dir, keeping at most max records.
// Lines that are not valid records, wherever they are, are moved to
// spool.bad and every valid one is kept: damage never stops a start.
// LoadDamage reports what was set aside.
//
// A directory that cannot be written (read-only, full) does not stop it
// either: what the spool holds is read, and new records are held in
// memory (Fault says why) until WriteHeld succeeds. Only a spool that
// exists and cannot be read is an error: rewriting it later would lose
// its rows.
func OpenSpool(dir string, max int) (*Spool, error) {
	if max < 1 {
		return nil, fmt.Errorf("spool: max rows %d must be positive", max)
	}
	s := &Spool{dir: dir, max: max, notify: make(chan struct{}, 1), next: 1}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if _, serr := os.Stat(dir); serr != nil {
			// Nothing to read: everything is held until it can be created.
			s.fault = fmt.Errorf("spool: create %s: %w", dir, err)
			s.heldFrom = s.next
			return s, nil
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, ackFile)); err == nil {
		s.acked, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: read ack: %w", err)
	}
	path := filepath.Join(dir, spoolFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		werr := err
		// Read what there is; hold everything new.
		if f, err = os.Open(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("spool: open: %w", err)
		}
		s.fault = fmt.Errorf("spool: open %s for writing: %w", path, werr)
	}
	if f != nil {
		s.f = f
		if err := s.load(); err != nil {
			f.Close()
			return nil, err
		}
	}
	if s.next <= s.acked {
		s.next = s.acked + 1
	}
	if s.fault != nil {
		s.heldFrom = s.next
	}
	s.syncedSize = s.size
	return s, nil
}

// damaged is a piece of the spool file that is not a valid record.
type damaged struct {
	off  int
	data []byte
}

// parseSpool splits a spool file into its valid records, in file order,
// and the damaged pieces. A line that is not a record may still end in
// one: a torn write that the next append followed (no newline between
// them); that record is kept and only the torn prefix is damaged. A last
// line without a newline is damaged when partialTail, else skipped (a
// write in progress).
func parseSpool(data []byte, partialTail bool) (recs []Record, bad []damaged) {
	for off := 0; off < len(data); {
		nl := bytes.IndexByte(data[off:], '\n')
		end := off + nl
		if nl < 0 {
			if !partialTail {
				break
			}
			end = len(data)
		}
		line := data[off:end]
		if r, ok := decodeRecord(line); ok {
			recs = append(recs, r)
		} else if len(line) > 0 {
			cut := len(line)
			for i := 1; i < len(line); i++ {
				j := bytes.Index(line[i:], []byte(`{"seq":`))
				if j < 0 {
					break
				}
				i += j
				if r, ok := decodeRecord(line[i:]); ok {
					recs = append(recs, r)
					cut = i
					break
				}
			}
			bad = append(bad, damaged{off: off, data: line[:cut]})
		}
		off = end + 1
	}
	return recs, bad
}

// decodeRecord parses one line; ok only for a complete, well-formed record.
func decodeRecord(line []byte) (Record, bool) {
	var r Record
	if json.Unmarshal(line, &r) != nil || r.Seq == 0 || r.ID == "" {
		return r, false
	}
	switch r.Kind {
	case KindSnapshot:
		return r, r.Snapshot != nil && r.Kill == nil
	case KindKill:
		if r.Kill != nil && r.Kill.Reason == "" {
			r.Kill.Reason = DefaultReason // a line from before reasons existed
		}
		return r, r.Kill != nil && r.Snapshot == nil
	}
	return r, false
}

// load reads the file. Damaged lines go to spool.bad and the file is
// rewritten without them; if that fails they stay (and are set aside
// again at the next start) and the next append starts on a new line.
func (s *Spool) load() error {
	data, err := io.ReadAll(s.f)
	if err != nil {
		return fmt.Errorf("spool: read: %w", err)
	}
	s.size = int64(len(data))
	recs, bad := parseSpool(data, true)
	at := map[string]int{}
	superseded := 0
	for _, r := range recs {
		if r.Seq >= s.next {
			s.next = r.Seq + 1
		}
		if r.Seq <= s.acked {
			s.garbage++
			continue
		}
		if i, ok := at[r.ID]; ok { // the later record with an id wins
			s.recs[i].ID = ""
			superseded++
		}
		at[r.ID] = len(s.recs)
		s.recs = append(s.recs, r)
	}
	if superseded > 0 {
		kept := s.recs[:0]
		for _, r := range s.recs {
			if r.ID != "" {
				kept = append(kept, r)
			}
		}
		s.recs = kept
		s.garbage += superseded
	}
	for len(s.recs) > s.max { // the bound also holds across restarts
		s.dropOldestLocked(false)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		s.needNL = true
	}
	if len(bad) > 0 {
		var buf bytes.Buffer
		now := time.Now().UTC().Format(time.RFC3339Nano)
		for _, b := range bad {
			fmt.Fprintf(&buf, "# %s damaged line at byte %d of %s (%d bytes)\n", now, b.off, spoolFile, len(b.data))
			buf.Write(b.data)
			buf.WriteByte('\n')
		}
		s.loadBad = len(bad)
		s.bad += uint64(len(bad))
		if err := appendSync(filepath.Join(s.dir, badFile), buf.Bytes()); err != nil {
			// Keep the bytes where they are rather than lose them.
			s.loadErr = fmt.Errorf("spool: set aside %d damaged lines: %w", len(bad), err)
			return nil
		}
		if err := s.compactLocked(); err != nil {
			s.loadErr = err
		}
		return nil
	}
	if s.garbage > 0 { // acked, superseded or over the bound
		if err := s.compactLocked(); err != nil {
			s.loadErr = err
		}
	}
	return nil
}

// LoadDamage reports how many damaged lines OpenSpool set aside in
// spool.bad, and the error if setting them aside or rewriting the spool
// failed (the daemon runs on either way; the caller logs it once).
func (s *Spool) LoadDamage() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadBad, s.loadErr
}

// BadPath is the file damaged lines and refused rows are set aside in.
func (s *Spool) BadPath() string { return filepath.Join(s.dir, badFile) }

// ReadSpool returns the records held in the spool in dir without opening it
// for writing, and how many damaged lines it skipped: a running daemon may
// be appending (a last line without a newline is a write in progress, not
// damage), and the reader may not be allowed to write (the daemon sets
// damaged lines aside at its next start). A missing spool holds nothing.
func ReadSpool(dir string) ([]Record, int, error) {
	var acked uint64
	if b, err := os.ReadFile(filepath.Join(dir, ackFile)); err == nil {
		acked, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	data, err := os.ReadFile(filepath.Join(dir, spoolFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("spool: read: %w", err)
	}
	recs, bad := parseSpool(data, false)
	at := map[string]int{}
	var out []Record
	for _, r := range recs {
		if r.Seq <= acked {
			continue
		}
		if i, ok := at[r.ID]; ok {
			out[i] = r // the later record with an id wins
			continue
		}
		at[r.ID] = len(out)
		out = append(out, r)
	}
	return out, len(bad), nil
}

// Append assigns r the next sequence number and makes it durable. On a
// failed write or fsync the file is cut back to where it was, so no torn
// line stays for the next append to follow; the error is returned and r
// is not held.
//
// Appends from many goroutines share fsyncs (group commit): each writes
// its line under the lock, then waits until an fsync that started after
// its write has succeeded; one caller's fsync covers every line written
// before it. Thousands of agents killed at once each spool a pending and
// a complete row; at 0.4 ms per fsync (2-core VM) one fsync a row would
// serialise seconds of waiting into the kills.
func (s *Spool) Append(r Record) (Record, error) { return s.add(r, false) }

// Replace appends r, which carries the id of an earlier record; the
// earlier one, if still undelivered, is superseded: only r is delivered.
// (Once delivered, the database decides: see Postgres.Insert.)
func (s *Spool) Replace(r Record) (Record, error) { return s.add(r, true) }

// unsynced is a record written to the file but not yet known durable.
type unsynced struct {
	r       Record
	replace bool
	ticket  uint64
	st      *syncState
}

// syncState is how one append ended: settled (durable, or cut back with
// err) by whichever fsync or rewrite covered its line. Guarded by mu.
type syncState struct {
	done bool
	err  error
}

func (s *Spool) add(r Record, replace bool) (Record, error) {
	s.mu.Lock()
	r.Seq = s.next
	line, err := json.Marshal(r)
	if err != nil {
		s.mu.Unlock()
		return r, fmt.Errorf("spool: encode: %w", err)
	}
	if s.heldFrom != 0 && len(s.waiting) == 0 {
		// The disk failed earlier: held in memory, nothing written.
		s.next++
		s.ticket++
		s.waiting = append(s.waiting, unsynced{r: r, replace: replace, ticket: s.ticket, st: &syncState{}})
		s.commitLocked(s.ticket)
		s.mu.Unlock()
		return r, nil
	}
	st := &syncState{}
	s.next++
	s.ticket++
	s.waiting = append(s.waiting, unsynced{r: r, replace: replace, ticket: s.ticket, st: st})
	if s.heldFrom == 0 {
		if err := s.writeLocked(line); err != nil {
			// Cut back (if it can be) and held: the lines before it are
			// settled by the fsync below, it is not written.
			s.holdLocked(r.Seq, err)
		}
	}
	s.mu.Unlock()
	return r, s.syncTo(st)
}

// writeLocked appends one line to the file.
func (s *Spool) writeLocked(line []byte) error {
	if s.torn {
		if err := s.cutLocked(); err != nil {
			return fmt.Errorf("spool: cut back an earlier failed write: %w", err)
		}
	}
	var buf []byte
	if s.needNL {
		buf = append(buf, '\n')
	}
	buf = append(append(buf, line...), '\n')
	if _, err := s.f.Write(buf); err != nil {
		return s.failLocked("write", err)
	}
	s.size += int64(len(buf))
	s.needNL = false
	return nil
}

// holdLocked notes that the record seq and every later one is held in
// memory only, because of err, until WriteHeld.
func (s *Spool) holdLocked(seq uint64, err error) {
	if s.heldFrom == 0 || seq < s.heldFrom {
		s.heldFrom = seq
	}
	if s.fault == nil {
		s.fault = err
	}
}

// syncTo returns once the append st stands for is settled: nil when its
// line is durable, fsyncing unless another caller's fsync (or a rewrite)
// already covered it; the error of the fsync that failed it otherwise.
func (s *Spool) syncTo(st *syncState) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if st.done {
		err := st.err
		s.mu.Unlock()
		return err
	}
	upto, size, f := s.ticket, s.size, s.f
	s.mu.Unlock()
	err := fsync(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.done { // a rewrite settled it meanwhile
		return st.err
	}
	if err != nil {
		// Every line since the last good fsync may be lost: cut them all
		// back (if the disk lets us) and hold them, and every record after
		// them, in memory until WriteHeld. Every waiting writer is settled:
		// its record is kept.
		s.size = s.syncedSize
		ferr := s.failLocked("fsync", err)
		s.needNL = s.endsMidLineLocked()
		if len(s.waiting) > 0 {
			s.holdLocked(s.waiting[0].r.Seq, ferr)
		}
		s.commitLocked(s.ticket)
		return nil
	}
	s.syncedSize = size
	s.commitLocked(upto)
	return nil
}

// waitingLen is the number of appends waiting for an fsync (tests).
func (s *Spool) waitingLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// fsync is (*os.File).Sync; tests replace it to make an fsync fail, which a
// healthy disk never does on demand.
var fsync = (*os.File).Sync

// endsMidLineLocked reports whether the file, s.size long, ends in a line
// without a newline (a damaged last line kept at open).
func (s *Spool) endsMidLineLocked() bool {
	if s.size == 0 {
		return false
	}
	var b [1]byte
	_, err := s.f.ReadAt(b[:], s.size-1)
	return err == nil && b[0] != '\n'
}

// commitLocked moves the durable records (tickets up to upto) into recs
// and tells the deliverer.
func (s *Spool) commitLocked(upto uint64) {
	if s.takeLocked(upto) == 0 {
		return
	}
	if s.heldFrom == 0 {
		_ = s.maybeCompactLocked() // a failed rewrite only leaves garbage on disk
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// takeLocked moves waiting records with tickets up to upto into recs, in
// sequence order, superseding earlier records with a replaced id and
// keeping the bound. It returns how many it moved.
func (s *Spool) takeLocked(upto uint64) int {
	n := 0
	for ; n < len(s.waiting) && s.waiting[n].ticket <= upto; n++ {
		w := s.waiting[n]
		if w.replace {
			for i := len(s.recs) - 1; i >= 0; i-- {
				if s.recs[i].ID == w.r.ID {
					s.recs = append(s.recs[:i], s.recs[i+1:]...)
					s.garbage++
					break
				}
			}
		}
		s.recs = append(s.recs, w.r)
		if len(s.recs) > s.max {
			s.dropOldestLocked(false)
		}
		w.st.done = true
	}
	clear(s.waiting[:n])
	s.waiting = s.waiting[n:]
	return n
}

// failLocked cuts the file back after a failed write or fsync.
func (s *Spool) failLocked(op string, err error) error {
	s.torn = true
	if cerr := s.cutLocked(); cerr != nil {
		return fmt.Errorf("spool: %s: %w (and cutting back the partial line: %v)", op, err, cerr)
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

func (s *Spool) cutLocked() error {
	if err := s.f.Truncate(s.size); err != nil {
		return err
	}
	s.torn = false
	return nil
}

// dropOldestLocked keeps the spool bounded: the oldest snapshot goes first;
// kill records only when nothing else is left. The row stays in the file
// as garbage until the next rewrite, which comes once garbage outweighs
// the rows held: amortized, a few rows' worth of writing per dropped row.
// At the next open the bound is applied again to what the file holds.
func (s *Spool) dropOldestLocked(compact bool) {
	i := 0
	for j, r := range s.recs {
		if r.Kind == KindSnapshot {
			i = j
			break
		}
	}
	copy(s.recs[1:i+1], s.recs[:i]) // the kills before it move up by one
	s.recs[0] = Record{}
	s.recs = s.recs[1:]
	s.dropped++
	s.garbage++
	if compact && s.heldFrom == 0 {
		_ = s.maybeCompactLocked() // a failed rewrite only leaves garbage on disk
	}
}

// maybeCompactLocked rewrites the file once garbage outweighs the records
// held, or when nothing is held.
func (s *Spool) maybeCompactLocked() error {
	if s.garbage == 0 || len(s.recs) > 0 && (s.garbage < compactMin || s.garbage < len(s.recs)) {
		return nil
	}
	return s.compactLocked()
}

// Notify is signalled after each Append.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Pending returns up to n undelivered records, oldest first.
func (s *Spool) Pending(n int) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, len(s.recs))
	return append([]Record(nil), s.recs[:n]...)
}

// Records returns every record held.
func (s *Spool) Records() []Record { return s.Pending(int(^uint(0) >> 1)) }

// Len is the number of records held.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// Dropped counts records dropped to keep the spool bounded.
func (s *Spool) Dropped() uint64 { return s.count(&s.dropped) }

// Bad counts what was set aside in spool.bad since open: damaged lines
// found at open and rows the database refused.
func (s *Spool) Bad() uint64 { return s.count(&s.bad) }

// count reads one of s's counters under its lock.
func (s *Spool) count(c *uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *c
}

// SetAside appends r to spool.bad after a line giving reason, durably.
// The caller then acks it: a record the database refuses for good must
// not hold back the ones after it.
func (s *Spool) SetAside(r Record, reason string) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("spool: encode: %w", err)
	}
	reason = strings.ReplaceAll(reason, "\n", " ")
	entry := fmt.Sprintf("# %s %s\n%s\n", time.Now().UTC().Format(time.RFC3339Nano), reason, line)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := appendSync(filepath.Join(s.dir, badFile), []byte(entry)); err != nil {
		// The row stays (unacked) and is set aside when the disk takes it.
		err = fmt.Errorf("spool: set aside record %d: %w", r.Seq, err)
		if s.fault == nil {
			s.fault = err
		}
		return &DiskError{err}
	}
	s.bad++
	return nil
}

// Ack removes the records up to seq, which have been committed to the
// database (or set aside). The ack is made durable before they are
// forgotten; if the disk refuses it they are forgotten all the same (a
// replay after a crash inserts nothing) and the ack is written by the
// next WriteHeld.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeFileSync(filepath.Join(s.dir, ackFile), []byte(strconv.FormatUint(seq, 10)+"\n")); err != nil {
		s.ackDirty = true
		if s.fault == nil {
			s.fault = fmt.Errorf("spool: write ack: %w", err)
		}
	} else {
		s.ackDirty = false
		if s.heldFrom == 0 {
			s.fault = nil
		}
	}
	s.acked = seq
	n := 0
	for n < len(s.recs) && s.recs[n].Seq <= seq {
		n++
	}
	clear(s.recs[:n])
	s.recs = s.recs[n:]
	s.garbage += n
	if s.heldFrom == 0 {
		_ = s.maybeCompactLocked() // a failed rewrite only leaves garbage on disk
	}
	return nil
}

// Fault is why records are held in memory (or the ack could not be
// written): nil when the disk takes everything.
func (s *Spool) Fault() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// Held is the number of records held in memory only, not on disk.
func (s *Spool) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.heldFrom == 0 {
		return 0
	}
	i := sort.Search(len(s.recs), func(i int) bool { return s.recs[i].Seq >= s.heldFrom })
	return len(s.recs) - i
}

// WriteHeld makes what is held in memory durable again: the file is
// rewritten with every record held (and the ack written) once the disk
// takes it. It returns how many records were held before, and the
// error if the disk still refuses (they stay held).
func (s *Spool) WriteHeld() (int, error) {
	held := s.Held()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == nil && s.heldFrom == 0 && !s.ackDirty {
		return 0, nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		s.fault = fmt.Errorf("spool: create %s: %w", s.dir, err)
		return held, s.fault
	}
	if s.ackDirty {
		if err := writeFileSync(filepath.Join(s.dir, ackFile), []byte(strconv.FormatUint(s.acked, 10)+"\n")); err != nil {
			s.fault = fmt.Errorf("spool: write ack: %w", err)
			return held, s.fault
		}
		s.ackDirty = false
	}
	if s.heldFrom != 0 || s.torn || s.f == nil {
		if err := s.compactLocked(); err != nil {
			s.fault = err
			return held, err
		}
	}
	s.fault = nil
	return held, nil
}

// Prune removes records created before t (retention without a database).
func (s *Spool) Prune(t time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.recs[:0]
	for _, r := range s.recs {
		if !r.Created.Before(t) {
			kept = append(kept, r)
		}
	}
	n := len(s.recs) - len(kept)
	clear(s.recs[len(kept):])
	s.recs = kept
	if n == 0 {
		return 0, nil
	}
	s.garbage += n
	// Rewritten now: a pruned row left in the file would come back at the
	// next open.
	return n, s.compactLocked()
}

// compactLocked rewrites the file with the records held and those still
// waiting for an fsync: once the rewrite is durable, so are they, and only
// then are they settled (if it fails, their writers fsync the old file).
func (s *Spool) compactLocked() error {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, r := range s.recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	for _, u := range s.waiting {
		b, err := json.Marshal(u.r)
		if err != nil {
			return err
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	w.Flush()
	path := filepath.Join(s.dir, spoolFile)
	if err := writeFileSync(path, buf.Bytes()); err != nil {
		return fmt.Errorf("spool: compact: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: reopen: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f = f
	s.heldFrom = 0
	s.size = int64(buf.Len())
	s.torn, s.needNL = false, false
	s.garbage = 0
	s.syncedSize = s.size
	s.takeLocked(s.ticket) // counts the lines its replaces supersede as garbage
	return nil
}

// Close closes the file.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// appendSync appends data to path (creating it) and fsyncs it and, so a
// new file's name is durable too, its directory.
func appendSync(path string, data []byte) error {
	if err := writeSync(path, os.O_APPEND, data); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeFileSync replaces path atomically and durably: write a temporary
// file, fsync it, rename it over path, fsync the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := writeSync(tmp, os.O_TRUNC, data); err != nil {
		os.Remove(tmp) // a partial copy would take the space a retry needs
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeSync writes data to path, created if missing, opened with mode
// (os.O_APPEND or os.O_TRUNC), and fsyncs it before closing.
func writeSync(path string, mode int, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|mode, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := fsync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// DiskError is the spool's disk refusing a write the deliverer needed (a
// row to set aside): not a database outage.
type DiskError struct{ Err error }

func (e *DiskError) Error() string { return e.Err.Error() }
func (e *DiskError) Unwrap() error { return e.Err }
