// Package statefile keeps small pieces of daemon state in the state dir
// across restarts: written whole to a temporary file, fsynced and renamed
// over the old one (rename(2) is atomic), then the directory fsynced, so a
// crash leaves either the old or the new state, never a torn one. A disk
// can still lose the end of a file or return garbage: Salvage reads what
// is whole before the damage and says what was dropped.
//
// Boottime readings (CLOCK_BOOTTIME) are only comparable within one boot,
// so every file carries the kernel's boot id (/proc/sys/kernel/random/boot_id)
// and Load reports a file from another boot as stale.
package statefile
