//go:build !unix

package store

import (
	"fmt"
	"runtime"
)

// LockDir is not implemented on this GOOS.
func LockDir(dir string) (func(), error) {
	return nil, fmt.Errorf("state dir lock: not implemented on %s", runtime.GOOS)
}
