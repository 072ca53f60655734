package cgroupinfo

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Info is where a process runs. Empty fields are unknown or not applicable.
type Info struct {
	// Path is the cgroup v2 path, e.g. "/system.slice/docker-<id>.scope";
	// "" when the process has no v2 line (a v1-only host).
	Path string `json:"cgroup,omitempty"`
	// ContainerID is the 64-hex ID of the container the path names.
	ContainerID string `json:"container_id,omitempty"`
	// PodUID is the Kubernetes pod's UID, with dashes.
	PodUID string `json:"pod_uid,omitempty"`
}

// IsZero reports whether nothing is known.
func (i Info) IsZero() bool { return i == Info{} }

// ErrFormat is returned for content that is not /proc/PID/cgroup.
var ErrFormat = errors.New("not a /proc/PID/cgroup file")

// Parse parses the contents of /proc/PID/cgroup.
func Parse(data []byte) (Info, error) {
	var info Info
	var v1 [][]byte // v1 paths, name=systemd first
	seen := false
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(line) == 0 {
			continue
		}
		id, rest, ok1 := bytes.Cut(line, []byte{':'})
		ctrl, path, ok2 := bytes.Cut(rest, []byte{':'})
		if !ok1 || !ok2 || len(id) == 0 || !digits(id) || len(path) == 0 {
			return Info{}, fmt.Errorf("%w: line %q", ErrFormat, line)
		}
		seen = true
		switch {
		case string(id) == "0" && len(ctrl) == 0:
			// proc_cgroup_show (kernel/cgroup/cgroup.c) appends " (deleted)"
			// for a task whose cgroup was removed (an exiting task): the
			// cgroup's own path is what names its container.
			info.Path = strings.TrimSuffix(string(path), " (deleted)")
		case string(ctrl) == "name=systemd":
			v1 = append([][]byte{path}, v1...)
		default:
			v1 = append(v1, path)
		}
	}
	if !seen {
		return Info{}, fmt.Errorf("%w: empty", ErrFormat)
	}
	info.ContainerID, info.PodUID = names(info.Path)
	for _, p := range v1 {
		if info.ContainerID != "" || info.PodUID != "" {
			break
		}
		info.ContainerID, info.PodUID = names(string(p))
	}
	return info, nil
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// names finds the innermost container ID and pod UID a cgroup path names.
func names(path string) (container, pod string) {
	comps := strings.Split(path, "/")
	kubepods := false // a "kubepods…" component came before
	for i, c := range comps {
		if isKubepods(c) {
			kubepods = true
		}
		if id := containerID(c, comps[:i], pod != ""); id != "" {
			container = id
		}
		if uid := podUID(c, kubepods); uid != "" {
			pod = uid
		}
	}
	return container, pod
}

// isKubepods reports whether c is the kubelet's pods cgroup or one of its
// QoS or pod slices: kubepods (cgroupfs driver), kubepods.slice,
// kubepods-burstable.slice, kubelet-kubepods.slice (kind). A component
// merely containing the word (my-kubepods-x) is not.
func isKubepods(c string) bool {
	if c == "kubepods" {
		return true
	}
	s, ok := strings.CutSuffix(c, ".slice")
	return ok && (s == "kubepods" || strings.HasPrefix(s, "kubepods-") || strings.Contains(s, "-kubepods"))
}

// containerPrefixes are the runtimes' "<prefix><id>[.scope]" names.
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-"}

// containerID returns the ID component c names, given the components
// before it; inPod says a pod component came before (the kubelet's
// cgroupfs driver names a container's cgroup by its bare ID).
func containerID(c string, before []string, inPod bool) string {
	if hex64(c) {
		if inPod || (len(before) > 0 && before[len(before)-1] == "docker") {
			return c
		}
		return ""
	}
	c = strings.TrimSuffix(c, ".scope")
	for _, p := range containerPrefixes {
		// crio-conmon-<id>, libpod-conmon-<id>: the monitor, not the
		// container; "conmon-<id>" is not 64 hex, so it is refused here.
		if id, ok := strings.CutPrefix(c, p); ok && hex64(id) {
			return id
		}
	}
	return ""
}

// podUID returns the UID component c names: pod<uid> (cgroupfs) or
// kubepods[-<qos>]-pod<uid_with_underscores>.slice (systemd), only below
// (or, for the systemd form, in) a kubepods component.
func podUID(c string, kubepods bool) string {
	if !kubepods {
		return ""
	}
	if s, ok := strings.CutSuffix(c, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if i < 0 || !strings.Contains(s, "kubepods") {
			return ""
		}
		uid := strings.ReplaceAll(s[i+len("-pod"):], "_", "-")
		if validUID(uid) {
			return uid
		}
		return ""
	}
	if uid, ok := strings.CutPrefix(c, "pod"); ok && validUID(uid) {
		return uid
	}
	return ""
}

// validUID: a UUID (8-4-4-4-12 hex digits) or 32 hex digits (a static
// pod's UID, the kubelet's hash of its manifest).
func validUID(s string) bool {
	switch len(s) {
	case 32:
		return isHex(s)
	case 36:
		for i := 0; i < len(s); i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isHexByte(s[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func hex64(s string) bool { return len(s) == 64 && isHex(s) }

// isHex: lowercase hex digits only, as runtimes and the kubelet write them.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isHexByte(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
