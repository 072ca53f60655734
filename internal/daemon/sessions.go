package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/agent-supervisor/supervisor/internal/statefile"
	"github.com/agent-supervisor/supervisor/internal/tracker"
	"go.uber.org/zap"
)

// SessionsFile holds session membership across restarts, in the state dir.
const SessionsFile = "sessions.json"

// restoreSessions gives the table back the membership the previous run
// persisted: after a restart the kernel no longer shows who forked a
// process that was reparented, and a leftover whose grace began before the
// restart must still die at its original time.
func (d *daemon) restoreSessions() {
	path := filepath.Join(d.cfg.StateDir, SessionsFile)
	var state []tracker.MemberState
	err := statefile.Load(path, &state)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case errors.Is(err, statefile.ErrOtherBoot):
		d.log.Info("session state is from before the last reboot: ignored", zap.String("file", path))
		return
	case err != nil:
		d.log.Warn("session state unreadable: sessions start empty", zap.Error(err))
		return
	}
	n := d.table.RestoreSessions(state)
	st := d.table.Stats()
	d.log.Info("sessions restored", zap.Int("members", n), zap.Int("persisted", len(state)),
		zap.Int("sessions", st.Sessions), zap.Int("leftovers", st.Leftovers))
}

// persistSessions writes session membership whenever it changed, at most
// Once a second, and once more when ctx ends.
func (d *daemon) persistSessions(ctx context.Context) {
	var saved uint64
	save := func() {
		gen := d.table.SessionGen()
		if gen == saved {
			return
		}
		state := d.table.SessionState()
		if err := statefile.Save(filepath.Join(d.cfg.StateDir, SessionsFile), state); err != nil {
			d.log.Error("persist sessions", zap.Error(err))
			return
		}
		saved = gen
		d.log.Debug("sessions persisted", zap.Int("members", len(state)))
	}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			save()
			return
		case <-tk.C:
			save()
		}
	}
}
