//go:build !linux

package cgroupinfo

// FindConfig says where FindRoot looks.
type FindConfig struct {
	Proc, Host string
	PID        int
}

// FindRoot: cgroup namespaces are Linux's; elsewhere paths are left alone.
func FindRoot(FindConfig) NamespaceState { return NamespaceState{Root: "/"} }
