package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// MaxCmdline is the most of a command line a kill row keeps, in bytes.
const MaxCmdline = 4096

// cleanText makes s valid UTF-8 without NUL bytes: PostgreSQL text in a
// UTF8 database refuses both ("invalid byte sequence for encoding",
// "invalid message format" for NUL), and a row it refuses must not wait
// in the spool forever. Invalid bytes become U+FFFD.
func cleanText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// capBytes cuts s to at most n bytes, at a rune boundary.
func capBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cleanJSON does for a JSON document what cleanText does for text: jsonb
// also refuses the escape \u0000 and unpaired surrogates. Documents with
// no escapes and valid UTF-8 (the usual case) are returned as they are;
// others are decoded (Go's decoder turns bad bytes and lone surrogates
// into U+FFFD), cleaned and encoded again. A document that is not JSON
// is left for the database to refuse.
func cleanJSON(doc json.RawMessage) json.RawMessage {
	if doc == nil || utf8.Valid(doc) && !bytes.Contains(doc, []byte(`\u`)) {
		return doc
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber() // numbers stay exactly as they were
	var v any
	if dec.Decode(&v) != nil {
		return doc
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(cleanValue(v)) != nil {
		return doc
	}
	return json.RawMessage(bytes.TrimRight(buf.Bytes(), "\n"))
}

func cleanValue(v any) any {
	switch v := v.(type) {
	case string:
		return cleanText(v)
	case []any:
		for i := range v {
			v[i] = cleanValue(v[i])
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[cleanText(k)] = cleanValue(x)
		}
		return out
	}
	return v
}

// sanitize makes a record's text what PostgreSQL accepts, before it is
// spooled, so the spool, memory and the database hold the same bytes.
func sanitize(r *Record) {
	r.Host = cleanText(r.Host)
	if s := r.Snapshot; s != nil {
		c := *s
		c.CheckType, c.Status = cleanText(c.CheckType), cleanText(c.Status)
		if c.ActionTaken != nil {
			a := cleanText(*c.ActionTaken)
			c.ActionTaken = &a
		}
		c.Details = cleanJSON(c.Details)
		r.Snapshot = &c
	}
	if k := r.Kill; k != nil {
		c := *k
		c.Comm, c.Rule, c.FinalSignal, c.Outcome = cleanText(c.Comm), cleanText(c.Rule), cleanText(c.FinalSignal), cleanText(c.Outcome)
		c.Cmdline = capBytes(cleanText(c.Cmdline), MaxCmdline)
		c.Reason = cleanText(c.Reason)
		c.Cgroup, c.ContainerID, c.PodUID = cleanText(c.Cgroup), cleanText(c.ContainerID), cleanText(c.PodUID)
		if c.Reason == "" {
			c.Reason = DefaultReason
		}
		r.Kill = &c
	}
}
