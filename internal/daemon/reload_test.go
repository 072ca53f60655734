package daemon

import (
	"slices"
	"sort"
	"testing"

	"github.com/agent-supervisor/supervisor/internal/config"
)

// TestRestartChangesCoverTheTable: every option the table says a reload
// does not apply is compared by applyReload, and logged as needing a
// restart when it changed; nothing else is.
func TestRestartChangesCoverTheTable(t *testing.T) {
	c := &config.Config{}
	var got []string
	for name := range restartChanges(c, c) {
		got = append(got, name)
	}
	want := config.NeedRestart()
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("applyReload compares %v; the table's restart options are %v", got, want)
	}
	for name, diff := range restartChanges(c, c) {
		if diff {
			t.Errorf("%s differs between a config and itself", name)
		}
	}
}
