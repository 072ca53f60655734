package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxRequest bounds a request line, newline included.
const MaxRequest = 64 << 10

// ReadTimeout bounds how long a client may take to send its request and
// read the answer: a connection that stalls cannot hold a handler.
const ReadTimeout = 5 * time.Second

// Commands.
const (
	CmdExtend = "extend"
	CmdKeep   = "keep"
	CmdUnkeep = "unkeep"
	CmdKill   = "kill"
	CmdReload = "reload"
)

// Request is one command.
type Request struct {
	Cmd string `json:"cmd"`
	PID int32  `json:"pid,omitempty"`
	// Start (extend, keep, unkeep, kill), RFC 3339, is when the process
	// the caller means started, as /agents shows it (started_at): the
	// command is refused if PID is now held by a process that started at
	// another time. Empty: whichever process holds PID.
	Start string `json:"start,omitempty"`
	// Duration (extend) is a Go duration to add to the agent's allowance.
	Duration string `json:"duration,omitempty"`
	// Until (extend) is the new deadline, RFC 3339.
	Until string `json:"until,omitempty"`
	// Force (kill) allows a process that is neither an agent nor a session
	// member.
	Force bool `json:"force,omitempty"`
}

// Response is the answer: OK with a human-readable Message, or Error.
type Response struct {
	OK      bool   `json:"ok,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	// PIDs the command acted on (kill: queued; keep: taken off the queue).
	PIDs []int32 `json:"pids,omitempty"`
	// Deadline is the new deadline (extend).
	Deadline *time.Time `json:"deadline,omitempty"`
}

// Errorf is an error response.
func Errorf(format string, args ...any) Response {
	return Response{Error: fmt.Sprintf(format, args...)}
}

var errTooLarge = fmt.Errorf("request larger than %d bytes", MaxRequest)

// DecodeRequest parses one request line (without its newline). Unknown
// fields and trailing data are errors: a client of another version should
// fail loudly, not have half its request ignored.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxRequest {
		return r, errTooLarge
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("malformed request: %w", err)
	}
	if dec.More() {
		return r, errors.New("malformed request: more than one JSON value")
	}
	switch r.Cmd {
	case CmdExtend, CmdKeep, CmdUnkeep, CmdKill:
		if r.PID <= 0 {
			return r, fmt.Errorf("%s: a positive pid is required", r.Cmd)
		}
		if r.Start != "" {
			if _, err := time.Parse(time.RFC3339Nano, r.Start); err != nil {
				return r, fmt.Errorf("%s: start is not an RFC 3339 time", r.Cmd)
			}
		}
	case CmdReload:
		if r.Start != "" {
			return r, errors.New("reload: takes no start")
		}
	case "":
		return r, errors.New("malformed request: no cmd")
	default:
		return r, fmt.Errorf("unknown command %q", r.Cmd)
	}
	return r, nil
}
