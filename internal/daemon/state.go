package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/agent-supervisor/supervisor/internal/statefile"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// stateDir keeps what the table must not lose across a restart: session
// membership (sessions.json) and the leases and keeps given through the
// control socket (leases.json), in the state directory.
type stateDir struct {
	dir   string
	table stateTable
	log   *zap.Logger

	leaseMu sync.Mutex      // orders lease saves: an older state never replaces a newer one
	damaged map[string]bool // state files found damaged at start (load)

	// A state file the disk refuses is kept in memory (the table holds
	// it) and saved again by persistSessions each second until it takes
	// it: one warning per file and cause, and /healthz names it.
	faultMu     sync.Mutex
	faults      map[string]string // file → cause of its last failed save
	leasesDirty bool              // the last lease save failed
}

// stateTable is what stateDir reads and restores of the tracker.
type stateTable interface {
	RestoreSessions([]tracker.MemberState) int
	SessionGen() uint64
	SessionState() []tracker.MemberState
	LeaseState() []tracker.Lease
	LoadLeases([]tracker.Lease)
	Stats() tracker.Stats
}

// SessionsFile holds session membership across restarts, in the state dir.
const SessionsFile = "sessions.json"

// restoreSessions gives the table back the membership the previous run
// persisted: after a restart the kernel no longer shows who forked a
// process that was reparented, and a leftover whose grace began before the
// restart must still die at its original time.
func (d *stateDir) restoreSessions() {
	state, ok := load[tracker.MemberState](d, SessionsFile, "session members", "session state is from before the last reboot: ignored")
	if !ok {
		return
	}
	n := d.table.RestoreSessions(state)
	st := d.table.Stats()
	d.log.Info("sessions restored", zap.Int("members", n), zap.Int("persisted", len(state)),
		zap.Int("sessions", st.Sessions), zap.Int("leftovers", st.Leftovers))
}

// persistSessions writes session membership whenever it changed, at most
// once a second, and once more when ctx ends.
func (d *stateDir) persistSessions(ctx context.Context) {
	var saved uint64
	save := func() {
		gen := d.table.SessionGen()
		if gen == saved {
			return
		}
		state := d.table.SessionState()
		if err := statefile.Save(filepath.Join(d.dir, SessionsFile), state); err != nil {
			d.saveFailed(SessionsFile, err)
			return
		}
		d.savedOK(SessionsFile)
		saved = gen
		d.log.Debug("sessions persisted", zap.Int("members", len(state)))
	}
	retryLeases := func() {
		d.faultMu.Lock()
		dirty := d.leasesDirty
		d.faultMu.Unlock()
		if dirty {
			_ = d.saveLeases()
		}
	}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			save()
			retryLeases()
			return
		case <-tk.C:
			save()
			retryLeases()
		}
	}
}

func (d *stateDir) saveLeases() error {
	d.leaseMu.Lock()
	defer d.leaseMu.Unlock()
	err := statefile.Save(filepath.Join(d.dir, leasesFile), d.table.LeaseState())
	d.faultMu.Lock()
	d.leasesDirty = err != nil
	d.faultMu.Unlock()
	if err != nil {
		d.saveFailed(leasesFile, err)
		return err
	}
	d.savedOK(leasesFile)
	return nil
}

// saveFailed notes a state file the disk refused: warned once per file
// and cause.
func (d *stateDir) saveFailed(name string, err error) {
	cause := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		cause = errno.Error()
	}
	d.faultMu.Lock()
	if d.faults == nil {
		d.faults = map[string]string{}
	}
	first := d.faults[name] != cause
	d.faults[name] = cause
	d.faultMu.Unlock()
	if first {
		d.log.Warn("state: "+name+" cannot be saved ("+cause+"): kept in memory and saved when the state dir takes it; a restart before then loses it",
			zap.Error(err))
	}
}

// savedOK notes a state file saved: a fault it had is over.
func (d *stateDir) savedOK(name string) {
	d.faultMu.Lock()
	cause, was := d.faults[name]
	delete(d.faults, name)
	d.faultMu.Unlock()
	if was {
		d.log.Info("state: "+name+" saved again", zap.String("was", cause))
	}
}

// stateFaults names the state files that could not be saved, for
// /healthz's "degraded".
func (d *stateDir) stateFaults() []string {
	d.faultMu.Lock()
	defer d.faultMu.Unlock()
	var out []string
	for name, cause := range d.faults {
		out = append(out, "state: "+name+" not saved: "+cause)
	}
	sort.Strings(out)
	return out
}

// loadLeases gives the table the leases and keeps of the previous run.
// Called before the start-up scan is merged; what belongs to processes
// that are gone is pruned after it.
func (d *stateDir) loadLeases() {
	state, ok := load[tracker.Lease](d, leasesFile, "leases and keeps", "leases are from before the last reboot: ignored")
	if !ok {
		return
	}
	d.table.LoadLeases(state)
}

// resaveLeases writes the leases restored from a damaged leases.json back
// at once, once the start-up scan has pruned them: leases are saved only
// when they change, and the damaged file has been moved aside.
func (d *stateDir) resaveLeases() {
	if !d.damaged[leasesFile] {
		return
	}
	if err := d.saveLeases(); err != nil {
		d.log.Error("persist leases", zap.Error(err))
	}
}

// load reads the state file name, a JSON array of what (say "leases"):
// false (nothing to restore) when there is none, when it is from before
// the last reboot (said with otherBoot) or when it cannot be read. A
// damaged file — cut mid-write, or garbage — is not a reason not to
// start: the whole entries before the damage are restored, the file is
// moved aside to name.damaged (the next save writes a new one), and one
// warning names the file and says what was kept and what was dropped.
func load[T any](d *stateDir, name, what, otherBoot string) ([]T, bool) {
	path := filepath.Join(d.dir, name)
	state, dmg, err := statefile.Salvage[T](path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, false
	case errors.Is(err, statefile.ErrOtherBoot):
		d.log.Info(otherBoot, zap.String("file", path))
		return nil, false
	case err != nil:
		d.log.Warn(fmt.Sprintf("%s unreadable: no %s restored", name, what), zap.String("file", path), zap.Error(err))
		return nil, false
	case dmg != nil:
		aside := path + ".damaged"
		if err := os.Rename(path, aside); err != nil {
			aside = ""
		}
		if d.damaged == nil {
			d.damaged = map[string]bool{}
		}
		d.damaged[name] = true
		d.log.Warn(fmt.Sprintf("%s damaged: %d %s restored, the rest dropped (%d bytes from byte %d of %d; %d whole entries not valid)",
			name, dmg.Kept, what, dmg.Size-dmg.At, dmg.At, dmg.Size, dmg.Skipped),
			zap.String("file", path), zap.Int("kept", dmg.Kept), zap.Int("skipped", dmg.Skipped),
			zap.Int64("damaged_at", dmg.At), zap.Int64("size", dmg.Size), zap.String("damage", dmg.Err.Error()),
			zap.String("moved_to", aside))
	}
	return state, true
}

// leasesFile holds the leases and keeps given through the control socket,
// in the state dir, so that they survive a restart.
const leasesFile = "leases.json"
