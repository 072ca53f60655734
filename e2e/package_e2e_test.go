package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The Debian package, for real: scripts/package builds it, dpkg installs
// it on this machine, removes it and purges it.

const (
	pkgName = "agent-supervisor"
	pkgConf = "/etc/agent-supervisor/supervisor.conf"
)

// pkgPaths are what the package installs, and what it or its purge must
// leave no trace of.
var pkgPaths = []string{"/usr/bin/supervisor", "/lib/systemd/system/agent-supervisor.service", pkgConf,
	"/usr/share/man/man8/supervisor.8.gz", "/usr/share/bash-completion/completions/supervisor",
	"/usr/share/zsh/vendor-completions/_supervisor", "/usr/share/fish/vendor_completions.d/supervisor.fish"}

// pkgDirs are the directories of its configuration and state.
var pkgDirs = []string{"/etc/agent-supervisor", "/var/lib/agent-supervisor"}

// needTools: the tools the install test runs; CI must have them
// (scripts/test installs man-db and file).
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		needTool(t, tool, "")
	}
}

// dpkg runs dpkg with args as apt does: holding dpkg's frontend lock
// (waiting for it while another apt-get or dpkg on this machine has it),
// and telling dpkg so.
func dpkg(t testing.TB, args ...string) (string, error) {
	t.Helper()
	f, err := os.OpenFile("/var/lib/dpkg/lock-frontend", os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return "", err
	}
	defer f.Close() // releases the lock
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk); err != nil {
		return "", fmt.Errorf("dpkg's frontend lock: %w", err)
	}
	cmd := exec.Command("dpkg", args...)
	cmd.Env = append(os.Environ(), "DPKG_FRONTEND_LOCKED=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func installed(t testing.TB) string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", pkgName).CombinedOutput()
	return string(out)
}

// TestIntegrationDebPackage builds the package with scripts/package, reads
// it back (contents, conffiles, maintainer scripts), installs it with
// dpkg -i, runs /usr/bin/supervisor version and man -l on its page,
// removes it (the configuration stays), purges it (nothing stays). It
// changes the machine, but only in paths no other test uses (the tests run
// the daemon they build, never /usr/bin/supervisor), so it runs beside
// them, and purges the package at cleanup whatever happened. It refuses to
// run where the package, the binary or its directories are there already:
// they are not its to remove.
func TestIntegrationDebPackage(t *testing.T) {
	if ranApart(t) {
		return
	}
	needTools(t, "dpkg", "dpkg-deb", "dpkg-query", "man", "file", "git")
	if s := installed(t); strings.Contains(s, "installed") || strings.Contains(s, "config-files") {
		failOrSkip(t, "the package %s is on this machine (%s): the test installs and purges it", pkgName, s)
	}
	for _, p := range append(append([]string(nil), pkgPaths...), pkgDirs...) {
		if _, err := os.Lstat(p); err == nil {
			failOrSkip(t, "%s exists: the test installs the package and purges it, which would remove it", p)
		}
	}

	dist := t.TempDir()
	cmd := exec.Command("../scripts/package", dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, pkgName+"_*_amd64.deb"))
	tgzs, _ := filepath.Glob(filepath.Join(dist, pkgName+"_*_linux_amd64.tar.gz"))
	if len(debs) != 1 || len(tgzs) != 1 {
		t.Fatalf("scripts/package wrote %v and %v, want one .deb and one .tar.gz", debs, tgzs)
	}
	deb := debs[0]
	sums := exec.Command("sha256sum", "-c", "SHA256SUMS")
	sums.Dir = dist
	if out, err := sums.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 3 {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	if out, _ := exec.Command("file", filepath.Join(dist, "supervisor")).CombinedOutput(); !strings.Contains(string(out), "statically linked") {
		t.Errorf("the binary is not static: %s", out)
	}

	// Read back: dpkg-deb -c, -I, --ctrl-tarfile.
	listing := must(t, "dpkg-deb", "-c", deb)
	for _, p := range pkgPaths {
		if !strings.Contains(listing, " ."+p+"\n") {
			t.Errorf("dpkg-deb -c lacks %s:\n%s", p, listing)
		}
	}
	info := must(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: " + pkgName, "Architecture: amd64", " postinst ", " prerm ", " postrm ", " conffiles "} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	conffiles := must(t, "sh", "-c", `dpkg-deb --ctrl-tarfile "$1" | tar -xO ./conffiles`, "sh", deb)
	if conffiles != pkgConf+"\n" {
		t.Errorf("conffiles %q, want %s", conffiles, pkgConf)
	}

	t.Cleanup(func() {
		if s := installed(t); strings.Contains(s, "installed") || strings.Contains(s, "config-files") || strings.Contains(s, "half") {
			if out, err := dpkg(t, "--purge", pkgName); err != nil {
				t.Errorf("cleanup: dpkg --purge: %v\n%s", err, out)
			}
		}
		// What a failed install or purge may have left: none of it was
		// there before the test.
		for _, p := range append(append([]string(nil), pkgPaths...), pkgDirs...) {
			os.RemoveAll(p)
		}
	})
	if out, err := dpkg(t, "-i", deb); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	if s := installed(t); s != "install ok installed" {
		t.Fatalf("after dpkg -i the package is %q", s)
	}
	for _, p := range pkgPaths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	for p, mode := range map[string]os.FileMode{"/etc/agent-supervisor": os.ModeDir | 0o700, pkgConf: 0o600, "/usr/bin/supervisor": 0o755} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, mode)
		}
	}
	if unit, err := os.ReadFile("/lib/systemd/system/agent-supervisor.service"); err != nil ||
		!regexp.MustCompile(`(?m)^ExecStart=/usr/bin/supervisor run --config `+pkgConf+` `).Match(unit) {
		t.Errorf("the installed unit does not run /usr/bin/supervisor with %s (%v)", pkgConf, err)
	}

	version := must(t, "/usr/bin/supervisor", "version")
	describe := strings.TrimSpace(must(t, "git", "describe", "--tags", "--always", "--dirty"))
	commit := strings.TrimSpace(must(t, "git", "rev-parse", "HEAD"))
	if !strings.HasPrefix(version, "supervisor "+describe+" go") || !strings.Contains(version, "\ncommit "+commit+"\n") {
		t.Errorf("supervisor version: %q, want the version %s and the commit %s", version, describe, commit)
	}
	// The conffile as installed is a config the daemon reads: every line
	// a comment.
	if out, err := exec.Command("/usr/bin/supervisor", "history", "--config", pkgConf, "--since", "1s",
		"--state-dir", t.TempDir()).CombinedOutput(); err != nil {
		t.Errorf("supervisor history --config %s: %v\n%s", pkgConf, err, out)
	}

	man := exec.Command("man", "-l", "/usr/share/man/man8/supervisor.8.gz")
	man.Env = append(os.Environ(), "MANPAGER=cat", "MANWIDTH=80", "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
	var stderr strings.Builder
	man.Stderr = &stderr
	page, err := man.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("man -l: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"NAME", "SYNOPSIS", "supervisor run", "--max-age", "REAPER_MAX_AGE"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("man -l: the page lacks %q", want)
		}
	}

	// What the daemon and its operator leave: state, the database URL.
	if err := os.MkdirAll("/var/lib/agent-supervisor", 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/var/lib/agent-supervisor/spool.jsonl", "/etc/agent-supervisor/database-url"} {
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := dpkg(t, "--remove", pkgName); err != nil {
		t.Fatalf("dpkg --remove: %v\n%s", err, out)
	}
	if s := installed(t); s != "deinstall ok config-files" {
		t.Errorf("after dpkg --remove the package is %q, want its config files alone", s)
	}
	if _, err := os.Stat("/usr/bin/supervisor"); err == nil {
		t.Error("dpkg --remove left /usr/bin/supervisor")
	}
	if _, err := os.Stat(pkgConf); err != nil {
		t.Errorf("dpkg --remove took the configuration: %v", err)
	}
	if out, err := dpkg(t, "--purge", pkgName); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	if s := installed(t); strings.Contains(s, "installed") || strings.Contains(s, "config-files") {
		t.Errorf("after dpkg --purge the package is %q", s)
	}
	for _, p := range append(append([]string(nil), pkgPaths...), pkgDirs...) {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("dpkg --purge left %s", p)
		}
	}
}
