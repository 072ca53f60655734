// Package events is the daemon's live event stream: a fan-out hub from the
// places where something happens (an agent found, a deadline moved, a kill
// finished, a health snapshot taken, events lost) to the clients following
// GET /events.
//
// The daemon must never wait for a client. Publish is a handful of
// non-blocking channel sends, one per subscriber that wants the event's
// type, and may be called with the process table's lock held. Each
// subscriber has a bounded buffer; one whose buffer is full when an event
// comes is dropped on the spot (its channel closed, the drop counted), so a
// client that stops reading costs the publisher nothing and holds at most
// its buffer of events.
//
// Events are typed structs. On the wire each is one JSON object per line
// (NDJSON) with "type" and "time" first, then the type's own fields.
package events
