//go:build linux

package initd

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Start-up's pages. Most of a Go init's resident memory is not its heap
// but its own binary: package initialisation and the daemon's start touch
// code and read-only data all over the file, and the kernel maps each
// touched page with its neighbours (fault-around), or the whole large folio
// it is part of (a freshly written binary sits in the page cache in folios
// of up to 2 MB), so some 12 to 15 of the binary's 15 MB of text and
// read-only data end up mapped (RssFile) beside 2 MB of heap and stacks
// (RssAnon). Once the daemon is up, an init runs a small part of that: the
// reaper, the /proc poll, the snapshots, the deadline thread.
// ReleaseStartupPages gives the rest back.

// ReleaseStartupPages asks the kernel to reclaim the pages of our own
// executable's read-only mappings (text, read-only data) that no other
// process maps (madvise MADV_PAGEOUT, Linux 5.4; MADV_NOHUGEPAGE first, so
// that what comes back is mapped page by page, not 2 MB at a time). What
// only start-up touched leaves memory: the page cache too, not only our
// mapping (in a container, the memory charged to it). What is still used
// is read back at its next touch, once: a major fault, which for the
// deadline thread's code means its first signal after start may come a
// disk read late (well under the clock tick that init's deadlines, from
// /proc start times, are already rounded to). Pages other processes map
// (another daemon running the same file) stay. The writable data segment
// and every other mapping are left alone. It returns the bytes of mappings
// advised.
func ReleaseStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || (fields[1] != "r-xp" && fields[1] != "r--p") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// Raw calls: the range is an address /proc gave, not memory Go
		// allocated.
		for _, advice := range []int{unix.MADV_NOHUGEPAGE, unix.MADV_PAGEOUT} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); errno != 0 {
				return total, fmt.Errorf("madvise(%d) %s: %w", advice, fields[0], errno)
			}
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}
