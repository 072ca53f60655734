package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Handler carries out one authorized request. It may be called from
// several goroutines at once.
type Handler func(p Peer, r Request) Response

// Config configures a Server.
type Config struct {
	// Path of the socket file.
	Path string
	// Group is the gid whose members may use the socket besides root
	// (NoGroup: root only). With a group, the file is mode 0660 and
	// belongs to it; without, 0600.
	Group   int
	Handler Handler
	Log     *zap.Logger
}

// maxConns bounds the connections served at once: a flood of clients gets
// "busy", not a goroutine and a descriptor each for ReadTimeout.
const maxConns = 16

// Server is a listening control socket.
type Server struct {
	cfg  Config
	ln   *net.UnixListener
	info os.FileInfo // the socket file we made, to remove only ours
	sem  chan struct{}
	wg   sync.WaitGroup
	done chan struct{}
	once sync.Once
}

// Listen creates the socket file and serves it until Close.
func Listen(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Path == "" {
		return nil, errors.New("control socket: empty path")
	}
	ln, info, err := listen(cfg.Path, cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln, info: info, sem: make(chan struct{}, maxConns), done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.cfg.Path }

// listen makes the socket file: bound under a temporary name in the same
// directory, given its mode and group, then renamed into place, so that it
// never exists at path with a wider mode than asked. A socket file left at
// path by a daemon that died is replaced; one a live daemon answers on is
// an error naming it.
func listen(path string, group int) (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
		if group >= 0 {
			// The group must reach the socket: search permission only.
			if err := os.Lchown(dir, os.Geteuid(), group); err != nil {
				return nil, nil, err
			}
			if err := os.Chmod(dir, 0o710); err != nil {
				return nil, nil, err
			}
		}
	}
	// Everything below (a temporary name, chmod, chown, rename, removing a
	// stale socket) goes by path: safe only in a directory that no one but
	// us can change. A directory another user may write to (or a symlink
	// to one) would let them swap names under us and have root chmod or
	// remove a file of their choosing.
	if err := checkDir(dir); err != nil {
		return nil, nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("%s: another daemon is listening on it", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil, fmt.Errorf("%s exists and cannot be probed: %w", path, err)
		}
		// Nobody listens: a socket file its daemon left behind.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("remove stale %s: %w", path, err)
		}
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(false) // Close removes path itself, if still ours
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	mode := os.FileMode(0o600)
	if group >= 0 {
		// connect(2) on a unix socket needs write permission on its file:
		// the group needs it too.
		mode = 0o660
		if err := os.Lchown(tmp, os.Geteuid(), group); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, info, nil
}

// checkDir refuses a socket directory that is a symlink, is not owned by
// us, or can be written by group or others.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (a symlink?)", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is not owned by uid %d: another user could replace the socket", dir, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by group or others (mode %#o): another user could replace the socket", dir, fi.Mode().Perm())
	}
	return nil
}

func (s *Server) serve() {
	defer close(s.done)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.Log.Error("control: accept", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: don't spin
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.SetDeadline(time.Now().Add(time.Second))
			writeResponse(c, Errorf("busy: too many control connections at once, try again"))
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.handle(c)
		}()
	}
}

// handle serves one connection: the peer check, one request, one answer.
func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	log := s.cfg.Log
	c.SetDeadline(time.Now().Add(ReadTimeout))
	p, err := peerOf(c)
	if err != nil {
		log.Error("control: cannot read the peer's credentials; connection refused", zap.Error(err))
		writeResponse(c, Errorf("refused: cannot read your credentials"))
		return
	}
	if !Authorized(p, s.cfg.Group) {
		log.Warn("control: connection refused: not root nor a member of the control group",
			zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID), zap.Uint32("gid", p.GID))
		msg := "permission denied: the control socket is for root"
		if s.cfg.Group >= 0 {
			msg += fmt.Sprintf(" and members of group %d", s.cfg.Group)
		}
		writeResponse(c, Errorf("%s (you are uid %d)", msg, p.UID))
		return
	}
	line, err := readLine(c)
	if err != nil && len(line) == 0 && errors.Is(err, io.EOF) {
		// Connected and closed without a word: another daemon checking
		// whether this socket is live before it would replace it.
		log.Debug("control: connection closed without a request", zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID))
		return
	}
	if err != nil {
		log.Warn("control: bad request", zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID), zap.Error(err))
		writeResponse(c, Errorf("%v", err))
		return
	}
	req, err := DecodeRequest(line)
	if err != nil {
		log.Warn("control: bad request", zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID), zap.Error(err))
		writeResponse(c, Errorf("%v", err))
		return
	}
	resp := s.call(p, req)
	fields := []zap.Field{zap.String("cmd", req.Cmd), zap.Int32("target_pid", req.PID), zap.Uint32("uid", p.UID),
		zap.Int32("caller_pid", p.PID), zap.Bool("ok", resp.OK)}
	if resp.OK {
		log.Info("control command", append(fields, zap.String("result", resp.Message))...)
	} else {
		log.Warn("control command", append(fields, zap.String("error", resp.Error))...)
	}
	writeResponse(c, resp)
}

// call runs the handler; a panic in it is an error answer, not a crash.
func (s *Server) call(p Peer, req Request) (resp Response) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Log.Error("control: handler panicked", zap.String("cmd", req.Cmd), zap.Any("panic", v), zap.Stack("stack"))
			resp = Errorf("internal error")
		}
	}()
	resp = s.cfg.Handler(p, req)
	if resp.Error == "" {
		resp.OK = true
	}
	return resp
}

// readLine reads one line of at most MaxRequest bytes.
func readLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxRequest+1), 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequest {
			return nil, errTooLarge
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil // no newline, but the client closed its side
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("no request within %s", ReadTimeout)
		default:
			return nil, fmt.Errorf("read request: %w", err)
		}
	}
}

func writeResponse(w io.Writer, r Response) {
	b, _ := json.Marshal(r)
	_, _ = w.Write(append(b, '\n'))
}

// Close stops accepting, lets the connections in flight finish (each is
// bounded by ReadTimeout) and removes the socket file if it is still the
// one Listen made. It may be called more than once.
func (s *Server) Close() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.ln.Close()
		<-s.done
		s.wg.Wait()
		if fi, err := os.Lstat(s.cfg.Path); err == nil && os.SameFile(fi, s.info) {
			os.Remove(s.cfg.Path)
		}
	})
}

// Call sends r to the socket at path and returns the answer. ctx bounds
// the whole exchange.
func Call(ctx context.Context, path string, r Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return Response{}, err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		// A refused peer may be answered and closed before it writes:
		// read the answer anyway.
		if resp, rerr := readResponse(c); rerr == nil {
			return resp, nil
		}
		return Response{}, fmt.Errorf("send request: %w", err)
	}
	return readResponse(c)
}

func readResponse(c net.Conn) (Response, error) {
	line, err := bufio.NewReader(io.LimitReader(c, 1<<20)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return Response{}, fmt.Errorf("read answer: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("malformed answer: %w", err)
	}
	return resp, nil
}
