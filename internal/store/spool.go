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
	"strconv"
	"strings"
	"sync"
	"time"
)

// Spool is an append-only, fsynced file of records not yet delivered (or,
// without a database, kept). A record is durable once Append returns.
//
// Files in the directory: spool.jsonl (one JSON record a line) and
// spool.ack (the highest sequence number delivered). Delivered and dropped
// records are removed by rewriting spool.jsonl (write, fsync, rename) once
// enough have piled up.
type Spool struct {
	mu      sync.Mutex
	dir     string
	f       *os.File
	recs    []Record // undelivered, in sequence order
	next    uint64
	acked   uint64
	max     int
	dropped uint64
	garbage int // lines in the file that are no longer in recs
	notify  chan struct{}
}

const (
	spoolFile = "spool.jsonl"
	ackFile   = "spool.ack"
)

// OpenSpool opens (creating) the spool in dir, keeping at most max records.
func OpenSpool(dir string, max int) (*Spool, error) {
	if max < 1 {
		return nil, fmt.Errorf("spool: max rows %d must be positive", max)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", dir, err)
	}
	s := &Spool{dir: dir, max: max, notify: make(chan struct{}, 1), next: 1}
	if b, err := os.ReadFile(filepath.Join(dir, ackFile)); err == nil {
		s.acked, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: read ack: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, spoolFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open: %w", err)
	}
	s.f = f
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	if s.next <= s.acked {
		s.next = s.acked + 1
	}
	return s, nil
}

// load reads the file. A torn last line (the daemon died mid-write) is cut
// off; every complete line was fsynced and is kept.
func (s *Spool) load() error {
	data, err := io.ReadAll(s.f)
	if err != nil {
		return fmt.Errorf("spool: read: %w", err)
	}
	good := 0
	for off := 0; off < len(data); {
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			break
		}
		line := data[off : off+nl]
		off += nl + 1
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("spool: corrupt record at byte %d of %s: %w", good, filepath.Join(s.dir, spoolFile), err)
		}
		good = off
		if r.Seq >= s.next {
			s.next = r.Seq + 1
		}
		if r.Seq <= s.acked {
			s.garbage++
			continue
		}
		s.recs = append(s.recs, r)
	}
	if good < len(data) {
		if err := s.f.Truncate(int64(good)); err != nil {
			return fmt.Errorf("spool: cut torn record: %w", err)
		}
	}
	_, err = s.f.Seek(0, io.SeekEnd)
	return err
}

// ReadSpool returns the records held in the spool in dir without opening it
// for writing: a running daemon may be appending (a torn last line is
// skipped, not cut off). A missing spool holds nothing.
func ReadSpool(dir string) ([]Record, error) {
	var acked uint64
	if b, err := os.ReadFile(filepath.Join(dir, ackFile)); err == nil {
		acked, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	data, err := os.ReadFile(filepath.Join(dir, spoolFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: read: %w", err)
	}
	var out []Record
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		var r Record
		if err := json.Unmarshal(data[:nl], &r); err != nil {
			return nil, fmt.Errorf("spool: corrupt record in %s: %w", filepath.Join(dir, spoolFile), err)
		}
		if r.Seq > acked {
			out = append(out, r)
		}
		data = data[nl+1:]
	}
	return out, nil
}

// Append assigns r the next sequence number and makes it durable.
func (s *Spool) Append(r Record) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Seq = s.next
	line, err := json.Marshal(r)
	if err != nil {
		return r, fmt.Errorf("spool: encode: %w", err)
	}
	line = append(line, '\n')
	if _, err := s.f.Write(line); err != nil {
		return r, fmt.Errorf("spool: write: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return r, fmt.Errorf("spool: fsync: %w", err)
	}
	s.next++
	s.recs = append(s.recs, r)
	if len(s.recs) > s.max {
		s.dropOldestLocked()
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return r, nil
}

// dropOldestLocked keeps the spool bounded: the oldest snapshot goes first;
// kill records only when nothing else is left.
func (s *Spool) dropOldestLocked() {
	i := 0
	for j, r := range s.recs {
		if r.Kind == KindSnapshot {
			i = j
			break
		}
	}
	s.recs = append(s.recs[:i], s.recs[i+1:]...)
	s.dropped++
	s.garbage++
	_ = s.compactLocked() // a failed rewrite only leaves the row on disk
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
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Ack removes the records up to seq, which have been committed to the
// database. The ack is made durable before they are forgotten.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeFileSync(filepath.Join(s.dir, ackFile), []byte(strconv.FormatUint(seq, 10)+"\n")); err != nil {
		return fmt.Errorf("spool: write ack: %w", err)
	}
	s.acked = seq
	n := 0
	for n < len(s.recs) && s.recs[n].Seq <= seq {
		n++
	}
	s.recs = s.recs[n:]
	s.garbage += n
	if s.garbage > 1000 || s.garbage > 4*len(s.recs) {
		return s.compactLocked()
	}
	return nil
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
	return n, s.compactLocked()
}

// compactLocked rewrites the file with the records held.
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
	w.Flush()
	path := filepath.Join(s.dir, spoolFile)
	if err := writeFileSync(path, buf.Bytes()); err != nil {
		return fmt.Errorf("spool: compact: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: reopen: %w", err)
	}
	s.f.Close()
	s.f = f
	s.garbage = 0
	return nil
}

// Close closes the file.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// writeFileSync replaces path atomically and durably: write a temporary
// file, fsync it, rename it over path, fsync the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
