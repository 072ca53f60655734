//go:build linux && !cgo

package initd

// reaper, in builds without cgo, is reapLoop: a goroutine in a blocking
// waitid (init_linux.go).
type reaper struct{}

func startReaper(in *Init) (*reaper, error) {
	go in.reapLoop()
	return &reaper{}, nil
}

func (*reaper) report(bool)    {}
func (*reaper) ownBegin()      {}
func (*reaper) ownEnd(int)     {}
func (*reaper) disown(int)     {}
func (*reaper) reaped() uint64 { return 0 }
func (*reaper) stop()          {}
