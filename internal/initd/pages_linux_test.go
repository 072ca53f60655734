//go:build linux

package initd

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func rssFileKB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The test binary's own text and read-only data are given back: RssFile
// falls, and the process runs on (what it touches next comes back).
func TestReleaseStartupPages(t *testing.T) {
	// A binary just linked may still be dirty in the page cache, which
	// reclaim writes back before it drops: written, as an installed one is.
	if f, err := os.Open("/proc/self/exe"); err == nil {
		f.Sync()
		f.Close()
	}
	before := rssFileKB(t)
	n, err := ReleaseStartupPages()
	after := rssFileKB(t)
	t.Logf("advised %d kB of mappings; RssFile %d kB before, %d kB after", n>>10, before, after)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no read-only mapping of the executable found in /proc/self/maps")
	}
	if after >= before {
		t.Errorf("RssFile %d kB after, %d kB before: nothing was unmapped", after, before)
	}
}
