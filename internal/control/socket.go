package control

import (
	"errors"
	"net"
	"os"
	"sync"
)

// Socket is a unix socket file made the way the control socket's is — in a
// directory only we can change, mode 0600 (0660 with a group), a stale file
// of a dead daemon replaced, a live one refused — for another server to
// accept on: the daemon's API socket, which serves HTTP. Its peers are
// checked with PeerOf and Authorized, as the control socket's are.
type Socket struct {
	*net.UnixListener
	path string
	info os.FileInfo // the socket file we made, to remove only ours
	once sync.Once
}

// ListenSocket creates the socket file at path for root and, unless group
// is NoGroup, the members of group.
func ListenSocket(path string, group int) (*Socket, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	ln, info, err := listen(path, group)
	if err != nil {
		return nil, err
	}
	return &Socket{UnixListener: ln, path: path, info: info}, nil
}

// Path is the socket's path.
func (s *Socket) Path() string { return s.path }

// Close stops listening and removes the socket file if it is still the one
// ListenSocket made. It may be called more than once.
func (s *Socket) Close() error {
	var err error
	s.once.Do(func() {
		err = s.UnixListener.Close()
		if fi, serr := os.Lstat(s.path); serr == nil && os.SameFile(fi, s.info) {
			os.Remove(s.path)
		}
	})
	return err
}

// PeerOf is who is on the other end of c, as the kernel recorded it at
// connect(2) (see peerOf).
func PeerOf(c *net.UnixConn) (Peer, error) { return peerOf(c) }
