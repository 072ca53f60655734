package control

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
)

// Peer is who is on the other end of a connection, as the kernel recorded
// it when the client called connect(2).
type Peer struct {
	PID    int32
	UID    uint32 // effective uid
	GID    uint32 // effective gid
	Groups []uint32
}

// String names the caller the way kill records and logs do.
func (p Peer) String() string { return fmt.Sprintf("uid %d pid %d", p.UID, p.PID) }

// NoGroup: only root may use the socket.
const NoGroup = -1

// Authorized reports whether p may use the socket: root, or a member of
// group (its gid or one of its supplementary groups).
func Authorized(p Peer, group int) bool {
	if p.UID == 0 {
		return true
	}
	if group < 0 {
		return false
	}
	g := uint32(group)
	if p.GID == g {
		return true
	}
	for _, x := range p.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// parseStatusGroups reads the "Groups:" line of /proc/PID/status: the
// supplementary groups, space-separated.
func parseStatusGroups(status []byte) ([]uint32, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Groups:"))
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range bytes.Fields(rest) {
			g, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("groups: bad gid %q", f)
			}
			out = append(out, uint32(g))
		}
		return out, nil
	}
	return nil, fmt.Errorf("no Groups: line")
}

// checkStatusUID checks that the effective uid in a /proc/PID/status is
// uid: the process read is the one that connected, not a later holder of
// its PID with other credentials.
func checkStatusUID(status []byte, uid uint32) error {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Uid:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // real, effective, saved, filesystem
		if len(f) < 2 {
			break
		}
		if string(f[1]) != strconv.FormatUint(uint64(uid), 10) {
			return fmt.Errorf("pid now has effective uid %s, not %d: not the process that connected", f[1], uid)
		}
		return nil
	}
	return fmt.Errorf("no Uid: line")
}
