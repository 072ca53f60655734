// Command packaging writes the release files of the agent supervisor
// (scripts/package runs it): the Debian package, built with nfpm, a
// .tar.gz of the binary with its unit, config file, man page and
// completions, and SHA256SUMS of everything it wrote with the binary.
//
// It is a module of its own so that nfpm and what it needs never become
// dependencies of the daemon's module. What goes in the package comes from
// the repository: the binary scripts/lib/build.sh built, the unit
// scripts/agent-supervisor.service (with the package's binary path), the
// man page docs/supervisor.8, and the config file and completions
// internal/config generates into packaging/.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

const (
	// name is the package's name; the binary is still supervisor.
	name = "agent-supervisor"
	// sourceBin is where the unit's source runs the binary from (a build
	// from source installs it there); packagedBin is where the package
	// puts it.
	sourceBin   = "/usr/local/bin/supervisor"
	packagedBin = "/usr/bin/supervisor"
	unitSource  = "scripts/agent-supervisor.service"
	unitDest    = "/lib/systemd/system/agent-supervisor.service"
	confDest    = "/etc/agent-supervisor/supervisor.conf"
)

func main() {
	root := flag.String("root", "..", "the repository's root")
	bin := flag.String("bin", "", "the static binary to package")
	describe := flag.String("describe", "", "`git describe --tags --always --dirty` of the checkout")
	commitTime := flag.Int64("time", 0, "the commit's time, Unix seconds (git log -1 --format=%ct): the files' time and the version's date")
	out := flag.String("out", "", "directory to write into")
	flag.Parse()
	if *bin == "" || *describe == "" || *commitTime == 0 || *out == "" {
		fmt.Fprintln(os.Stderr, "packaging: -bin, -describe, -time and -out are required")
		os.Exit(2)
	}
	written, err := build(*root, *bin, *describe, time.Unix(*commitTime, 0).UTC(), *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "packaging: %v\n", err)
		os.Exit(1)
	}
	for _, f := range written {
		fmt.Println(filepath.Join(*out, f))
	}
}

// build writes the .deb, the .tar.gz and SHA256SUMS into out, and returns
// their names.
func build(root, bin, describe string, mtime time.Time, out string) ([]string, error) {
	version, err := DebVersion(describe, mtime)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "packaging-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	in, err := inputs(root, bin, work)
	if err != nil {
		return nil, err
	}
	debName := fmt.Sprintf("%s_%s_amd64.deb", name, version)
	if err := writeDeb(filepath.Join(out, debName), Info(in, version, mtime)); err != nil {
		return nil, err
	}
	tarName := fmt.Sprintf("%s_%s_linux_amd64.tar.gz", name, version)
	if err := writeTarball(filepath.Join(out, tarName), strings.TrimSuffix(tarName, ".tar.gz"), in, mtime); err != nil {
		return nil, err
	}
	binName := filepath.Base(bin)
	if filepath.Dir(filepath.Clean(bin)) != filepath.Clean(out) {
		binName = "" // not a release file unless it is in out
	}
	sums := []string{debName, tarName}
	if binName != "" {
		sums = append([]string{binName}, sums...)
	}
	if err := writeSums(out, sums); err != nil {
		return nil, err
	}
	return append(sums, "SHA256SUMS"), nil
}

// input is what the package and the tarball are made of: paths of files
// on disk.
type input struct {
	bin, unit, sourceUnit, conf, man, manGz string
	bash, zsh, fish                         string
	postinst, prerm, postrm                 string
}

// inputs finds the repository's files and makes, in work, those the
// package needs made: the unit with the package's binary path, the man
// page gzipped.
func inputs(root, bin, work string) (input, error) {
	in := input{
		bin:        bin,
		sourceUnit: filepath.Join(root, unitSource),
		conf:       filepath.Join(root, "packaging/supervisor.conf"),
		man:        filepath.Join(root, "docs/supervisor.8"),
		bash:       filepath.Join(root, "packaging/completions/supervisor.bash"),
		zsh:        filepath.Join(root, "packaging/completions/_supervisor"),
		fish:       filepath.Join(root, "packaging/completions/supervisor.fish"),
		postinst:   filepath.Join(root, "packaging/debian/postinst"),
		prerm:      filepath.Join(root, "packaging/debian/prerm"),
		postrm:     filepath.Join(root, "packaging/debian/postrm"),
		unit:       filepath.Join(work, "agent-supervisor.service"),
		manGz:      filepath.Join(work, "supervisor.8.gz"),
	}
	src, err := os.ReadFile(in.sourceUnit)
	if err != nil {
		return in, err
	}
	unit, err := PackagedUnit(src)
	if err != nil {
		return in, err
	}
	if err := os.WriteFile(in.unit, unit, 0o644); err != nil {
		return in, err
	}
	man, err := os.ReadFile(in.man)
	if err != nil {
		return in, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // no name, no time: reproducible
	zw.Write(man)
	if err := zw.Close(); err != nil {
		return in, err
	}
	return in, os.WriteFile(in.manGz, gz.Bytes(), 0o644)
}

// PackagedUnit is the source unit with the package's binary path: one
// source for both.
func PackagedUnit(src []byte) ([]byte, error) {
	if !regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(sourceBin) + ` `).Match(src) {
		return nil, fmt.Errorf("%s: no ExecStart=%s", unitSource, sourceBin)
	}
	return bytes.ReplaceAll(src, []byte(sourceBin), []byte(packagedBin)), nil
}

// Info is the Debian package: its fields, files and maintainer scripts.
func Info(in input, version string, mtime time.Time) *nfpm.Info {
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	info := &nfpm.Info{
		Name:          name,
		Arch:          "amd64",
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "agent supervisor maintainers <root@localhost>",
		Description: "kills stale AI-agent processes exactly at their deadline\n" +
			"A root daemon that follows every process through the kernel's proc connector\n" +
			"and kills each stale AI agent (claude, npm agent workers) with its whole\n" +
			"process tree when it crosses its maximum age, and whatever an agent left\n" +
			"behind when it ends. Static binary, systemd unit, supervisor(8).",
		MTime: mtime,
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				file(in.bin, packagedBin, 0o755),
				file(in.unit, unitDest, 0o644),
				{Destination: "/etc/agent-supervisor", Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: 0o700, Owner: "root", Group: "root"}},
				{Source: in.conf, Destination: confDest, Type: files.TypeConfigNoReplace,
					FileInfo: &files.ContentFileInfo{Mode: 0o600, Owner: "root", Group: "root"}},
				file(in.manGz, "/usr/share/man/man8/supervisor.8.gz", 0o644),
				file(in.bash, "/usr/share/bash-completion/completions/supervisor", 0o644),
				file(in.zsh, "/usr/share/zsh/vendor-completions/_supervisor", 0o644),
				file(in.fish, "/usr/share/fish/vendor_completions.d/supervisor.fish", 0o644),
			},
			Scripts: nfpm.Scripts{PostInstall: in.postinst, PreRemove: in.prerm, PostRemove: in.postrm},
			Deb:     nfpm.Deb{Compression: "gzip"},
		},
	}
	return nfpm.WithDefaults(info)
}

func writeDeb(path string, info *nfpm.Info) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("deb: %w", err)
	}
	return f.Close()
}

// writeTarball writes the binary, the source unit (for /usr/local/bin),
// the config file, the man page and the completions under dir/.
func writeTarball(path, dir string, in input, mtime time.Time) error {
	entries := []struct {
		src, name string
		mode      int64
	}{
		{in.bin, "supervisor", 0o755},
		{in.sourceUnit, "agent-supervisor.service", 0o644},
		{in.conf, "supervisor.conf", 0o600},
		{in.man, "supervisor.8", 0o644},
		{in.bash, "completions/supervisor.bash", 0o644},
		{in.zsh, "completions/_supervisor", 0o644},
		{in.fish, "completions/supervisor.fish", 0o644},
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, d := range []string{dir + "/", dir + "/completions/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: dir + "/" + e.name, Mode: e.mode, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeSums writes SHA256SUMS of names (in dir), as sha256sum -c reads it.
func writeSums(dir string, names []string) error {
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%x  %s\n", h.Sum(nil), n)
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(b.String()), 0o644)
}

// describeRE is `git describe --tags --always --dirty`: a tag, with the
// commits since it and the commit, or the commit alone; -dirty when the
// tree has changes.
// A commit alone (hex, no dot: what a tag has) is tried first.
var describeRE = regexp.MustCompile(`^(?:([0-9a-f]{7,40})|v?([0-9][0-9A-Za-z.]*(?:-[0-9A-Za-z.]+)*?)(?:-([0-9]+)-g([0-9a-f]{4,}))?)(-dirty)?$`)

// DebVersion turns git describe into a Debian version that sorts as the
// releases do: v1.2.3 is 1.2.3, a pre-release tag v1.2.3-rc1 is 1.2.3~rc1
// (before 1.2.3), n commits after a tag is 1.2.3+git<date>.<n>.<hash>
// (after it), and with no tag at all 0.0.0~git<date>.<hash>. A dirty tree
// adds .dirty. date is the commit's, yyyymmdd.
func DebVersion(describe string, commit time.Time) (string, error) {
	m := describeRE.FindStringSubmatch(describe)
	if m == nil {
		return "", fmt.Errorf("git describe %q: neither a tag nor a commit", describe)
	}
	bare, tag, n, hash, dirty := m[1], m[2], m[3], m[4], m[5] != ""
	date := commit.UTC().Format("20060102")
	var v string
	switch {
	case bare != "":
		v = "0.0.0~git" + date + "." + bare
	case n != "":
		v = strings.ReplaceAll(tag, "-", "~") + "+git" + date + "." + n + "." + hash
	default:
		v = strings.ReplaceAll(tag, "-", "~")
	}
	if dirty {
		if strings.Contains(v, "git") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	if !debVersionRE.MatchString(v) {
		return "", fmt.Errorf("git describe %q makes %q, not a Debian version", describe, v)
	}
	return v, nil
}

// debVersionRE is a Debian upstream version without epoch or revision:
// it starts with a digit; letters, digits, . + ~ follow.
var debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
