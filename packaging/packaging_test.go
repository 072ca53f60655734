package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// need finds a tool the test runs: in CI it must be there.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide %s (package %s; scripts/test installs it): %v", tool, pkg, err)
		}
		t.Skipf("skipped: needs %s (apt-get install %s)", tool, pkg)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var commitTime = time.Date(2026, 12, 7, 21, 5, 0, 0, time.UTC)

func TestDebVersion(t *testing.T) {
	for describe, want := range map[string]string{
		"6fbc091":                  "0.0.0~git20261207.6fbc091",
		"6fbc091-dirty":            "0.0.0~git20261207.6fbc091.dirty",
		"v1.2.3":                   "1.2.3",
		"1.2.3":                    "1.2.3",
		"v1.2.3-dirty":             "1.2.3+dirty",
		"v1.2.3-4-gabc1234":        "1.2.3+git20261207.4.abc1234",
		"v1.2.3-4-gabc1234-dirty":  "1.2.3+git20261207.4.abc1234.dirty",
		"v1.2.3-rc1":               "1.2.3~rc1",
		"v1.2.3-rc1-2-gabc1234":    "1.2.3~rc1+git20261207.2.abc1234",
		"v0.1.0-beta.2-10-g0a1b2c": "0.1.0~beta.2+git20261207.10.0a1b2c",
	} {
		got, err := DebVersion(describe, commitTime)
		if err != nil || got != want {
			t.Errorf("DebVersion(%q) = %q, %v; want %q", describe, got, err, want)
		}
	}
	for _, bad := range []string{"", "release", "v1.2.3 4", "-dirty"} {
		if v, err := DebVersion(bad, commitTime); err == nil {
			t.Errorf("DebVersion(%q) = %q, want an error", bad, v)
		}
	}
	// dpkg orders them as the releases go.
	dpkg := need(t, "dpkg", "dpkg")
	order := []string{"0.0.0~git20261207.6fbc091", "1.2.3~rc1", "1.2.3~rc1+git20261207.2.abc1234", "1.2.3",
		"1.2.3+git20261207.4.abc1234", "1.2.4"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command(dpkg, "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", order[i-1], order[i])
		}
	}
}

// TestPackagedUnit: the package's unit is the source unit with the
// package's binary path, systemd takes it, and rates it at most 4.5.
func TestPackagedUnit(t *testing.T) {
	src, err := os.ReadFile("../" + unitSource)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := PackagedUnit(src)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unit), sourceBin) || !regexp.MustCompile(`(?m)^ExecStart=/usr/bin/supervisor run `).Match(unit) {
		t.Errorf("the packaged unit runs something else than /usr/bin/supervisor:\n%s", unit)
	}
	if _, err := PackagedUnit([]byte("[Service]\nExecStart=/opt/supervisor run\n")); err == nil {
		t.Error("a unit that does not run /usr/local/bin/supervisor was packaged")
	}
	analyze := need(t, "systemd-analyze", "systemd")
	path := filepath.Join(t.TempDir(), "agent-supervisor.service")
	// verify wants the binary to exist: true stands in for it.
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), packagedBin, "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, analyze, "verify", path)
	out := run(t, analyze, "security", "--offline=true", path)
	m := regexp.MustCompile(`Overall exposure level for agent-supervisor.service: ([0-9.]+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security --offline=true: %.1f", score)
	if score > 4.5 {
		t.Errorf("exposure level %.1f, want at most 4.5:\n%s", score, out)
	}
	// The docs say the score it has.
	for file, says := range map[string]string{"../README.md": "`systemd-analyze security` **" + m[1] + "**",
		"../docs/deployment.md": "`systemd-analyze security --offline=true` rates the unit\n**" + m[1] + " ",
		"../" + unitSource:      "`systemd-analyze security --offline=true` rates this unit " + m[1]} {
		if !strings.Contains(string(mustRead(t, file)), says) {
			t.Errorf("%s does not say the unit's score as %q", file, says)
		}
	}
}

// TestPackage builds the package and the tarball around a stand-in binary
// and reads them back with dpkg-deb and tar.
func TestPackage(t *testing.T) {
	dpkgDeb := need(t, "dpkg-deb", "dpkg")
	out := t.TempDir()
	bin := filepath.Join(out, "supervisor")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho supervisor test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	written, err := build("..", bin, "v1.2.3-4-gabc1234", commitTime, out)
	if err != nil {
		t.Fatal(err)
	}
	const version = "1.2.3+git20261207.4.abc1234"
	deb := "agent-supervisor_" + version + "_amd64.deb"
	tgz := "agent-supervisor_" + version + "_linux_amd64.tar.gz"
	if want := []string{deb, tgz, "supervisor", "SHA256SUMS"}; !sameSet(written, want) {
		t.Errorf("wrote %v, want %v", written, want)
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil || strings.Count(string(b), ": OK") != 3 {
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}

	debPath := filepath.Join(out, deb)
	info := run(t, dpkgDeb, "-f", debPath, "Package", "Version", "Architecture")
	if info != "Package: agent-supervisor\nVersion: "+version+"\nArchitecture: amd64\n" {
		t.Errorf("control fields:\n%s", info)
	}
	listing := run(t, dpkgDeb, "-c", debPath)
	files := map[string]string{} // path → mode
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
	}
	for path, mode := range map[string]string{
		"/usr/bin/supervisor":                 "-rwxr-xr-x",
		unitDest:                              "-rw-r--r--",
		"/etc/agent-supervisor/":              "drwx------",
		confDest:                              "-rw-------",
		"/usr/share/man/man8/supervisor.8.gz": "-rw-r--r--",
		"/usr/share/bash-completion/completions/supervisor":    "-rw-r--r--",
		"/usr/share/zsh/vendor-completions/_supervisor":        "-rw-r--r--",
		"/usr/share/fish/vendor_completions.d/supervisor.fish": "-rw-r--r--",
	} {
		if files[path] != mode {
			t.Errorf("%s: %q, want %s", path, files[path], mode)
		}
	}
	for path, mode := range files {
		if !strings.HasPrefix(mode, "d") && !slices.Contains([]string{"/usr/bin/supervisor", unitDest, confDest,
			"/usr/share/man/man8/supervisor.8.gz", "/usr/share/bash-completion/completions/supervisor",
			"/usr/share/zsh/vendor-completions/_supervisor", "/usr/share/fish/vendor_completions.d/supervisor.fish"}, path) {
			t.Errorf("unexpected file %s in the package", path)
		}
	}

	ctrl := t.TempDir()
	run(t, dpkgDeb, "--control", debPath, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); string(b) != confDest+"\n" {
		t.Errorf("conffiles %q, want %s alone", b, confDest)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		want, _ := os.ReadFile(filepath.Join("debian", s))
		got, err := os.ReadFile(filepath.Join(ctrl, s))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s in the package differs from debian/%s (%v)", s, s, err)
		}
		if fi, err := os.Stat(filepath.Join(ctrl, s)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
	}
	data := t.TempDir()
	run(t, dpkgDeb, "-x", debPath, data)
	src, _ := os.ReadFile("../" + unitSource)
	wantUnit, _ := PackagedUnit(src)
	for path, want := range map[string][]byte{unitDest: wantUnit, confDest: mustRead(t, "supervisor.conf"),
		"/usr/share/bash-completion/completions/supervisor": mustRead(t, "completions/supervisor.bash")} {
		if got := mustRead(t, filepath.Join(data, path)); string(got) != string(want) {
			t.Errorf("%s is not what the repository has", path)
		}
	}
	man := run(t, "sh", "-c", `gzip -dc "$1"`, "sh", filepath.Join(data, "usr/share/man/man8/supervisor.8.gz"))
	if man != string(mustRead(t, "../docs/supervisor.8")) {
		t.Error("the man page is not docs/supervisor.8")
	}

	tarList := run(t, "tar", "-tzf", filepath.Join(out, tgz))
	dir := strings.TrimSuffix(tgz, ".tar.gz") + "/"
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(tarList), "\n") {
		got = append(got, strings.TrimPrefix(l, dir))
	}
	want := []string{"", "completions/", "supervisor", "agent-supervisor.service", "supervisor.conf", "supervisor.8",
		"completions/supervisor.bash", "completions/_supervisor", "completions/supervisor.fish"}
	if !sameSet(got, want) {
		t.Errorf("the tarball holds %v, want %v under %s", got, want, dir)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestMaintainerScripts runs the scripts with a systemctl that records its
// calls: where systemd does not run they call nothing; where it runs (a
// mount namespace with /run/systemd/system) they reload it, restart on an
// upgrade, stop on removal. Purge is left to the install test (e2e), which
// runs it for real.
func TestMaintainerScripts(t *testing.T) {
	fake := t.TempDir()
	log := filepath.Join(fake, "calls")
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := func(prefix string, steps ...string) string {
		s := prefix
		for _, st := range steps {
			s += "; sh debian/" + st
		}
		return s
	}
	steps := []string{"postinst configure", "postinst configure 1.0", "prerm remove", "postrm remove"}
	calls := func(sh string) string {
		os.Remove(log)
		cmd := exec.Command("sh", "-ec", sh)
		cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", sh, err, out)
		}
		b, _ := os.ReadFile(log)
		return string(b)
	}
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Log("systemd runs here: the first half is not checked")
	} else if got := calls(script("true", steps...)); got != "" {
		t.Errorf("without systemd the scripts called systemctl:\n%s", got)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root")
		}
		t.Skip("skipped: the half with systemd needs root (a mount namespace)")
	}
	need(t, "unshare", "util-linux")
	got := calls("exec unshare --mount sh -ec '" + script("mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/system", steps...) + "'")
	want := "daemon-reload\ndaemon-reload\ntry-restart agent-supervisor.service\nstop agent-supervisor.service\ndaemon-reload\n"
	if got != want {
		t.Errorf("with systemd the scripts called systemctl:\n%s\nwant:\n%s", got, want)
	}
}
