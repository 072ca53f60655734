package deploy

import (
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction: its keyword (upper case) and
// the rest, continuation lines joined.
type instruction struct {
	cmd, args string
}

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, backslash continuations joined (the default escape
// character; the file sets no other).
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(t, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// stage is one FROM and what follows it.
type stage struct {
	from, name string
	ins        []instruction
}

func stages(ins []instruction) []stage {
	var out []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[len(f)-1]}
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				s.from, s.name = f[len(f)-3], f[len(f)-1]
			}
			out = append(out, s)
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].ins = append(out[len(out)-1].ins, in)
		}
	}
	return out
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dockerImageName is the image name the Dockerfile's header says to build
// (`docker build -t NAME .`), without a tag.
func dockerImageName(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^#\s+docker build -t (\S+) \.$`).FindStringSubmatch(readFile(t, "../Dockerfile"))
	if m == nil {
		t.Fatal("the Dockerfile's header does not say `docker build -t NAME .`")
	}
	name := m[1]
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return name
}

// stampFlags is an -ldflags that only stamps the version (-X main.version=…
// -X main.commit=…): it changes what `supervisor version` prints, not how
// the binary is built.
var stampFlags = regexp.MustCompile(`\s-ldflags\s+"(?:\s*-X\s+main\.(?:version|commit)=\S+)+\s*"`)

// goBuildFlags returns the flags of the `go build` in text, without -o and
// its argument, without a version stamp and without the package.
func goBuildFlags(text string) ([]string, bool) {
	text = stampFlags.ReplaceAllString(text, "")
	m := regexp.MustCompile(`go build((?:\s+\S+)*?)\s+\./cmd/supervisor`).FindStringSubmatch(text)
	if m == nil {
		return nil, false
	}
	var flags []string
	f := strings.Fields(m[1])
	for i := 0; i < len(f); i++ {
		if f[i] == "-o" {
			i++
			continue
		}
		flags = append(flags, f[i])
	}
	return flags, true
}

func TestDockerfile(t *testing.T) {
	ss := stages(parseDockerfile(readFile(t, "../Dockerfile")))
	if len(ss) < 2 {
		t.Fatalf("%d stages: want a multi-stage build", len(ss))
	}
	build, final := ss[0], ss[len(ss)-1]

	// The build stage: the Go release go.mod names, cgo on, built as
	// scripts/supervisor builds.
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readFile(t, "../go.mod"))
	if goVersion == nil {
		t.Fatal("no go directive in go.mod")
	}
	if !strings.HasPrefix(build.from, "golang:"+goVersion[1]+"-") && build.from != "golang:"+goVersion[1] {
		t.Errorf("build stage FROM %s: want golang:%s (go.mod's go version)", build.from, goVersion[1])
	}
	cgo, built := false, false
	for _, in := range build.ins {
		if (in.cmd == "ENV" || in.cmd == "ARG") && regexp.MustCompile(`\bCGO_ENABLED=1\b`).MatchString(in.args) {
			cgo = true
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "CGO_ENABLED=0") {
			t.Errorf("RUN %s: the C deadline thread needs cgo", in.args)
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			built = true
			got, ok := goBuildFlags(in.args)
			want, wok := goBuildFlags(readFile(t, "../scripts/supervisor"))
			if !ok || !wok || !slices.Equal(got, want) {
				t.Errorf("go build flags %q, scripts/supervisor builds with %q", got, want)
			}
		}
	}
	if !cgo {
		t.Error("the build stage does not set CGO_ENABLED=1")
	}
	if !built {
		t.Error("the build stage runs no `go build ... ./cmd/supervisor`")
	}

	// The final stage: slim Debian of the build image's release (glibc),
	// the binary from the build stage, the supervisor as entrypoint.
	if final.from != "debian:bookworm-slim" {
		t.Errorf("final stage FROM %s: want debian:bookworm-slim", final.from)
	}
	if !strings.Contains(build.from, "bookworm") {
		t.Errorf("build stage FROM %s: build on bookworm too, so the cgo binary's glibc matches the runtime's", build.from)
	}
	var copied bool
	for _, in := range final.ins {
		switch in.cmd {
		case "COPY":
			if strings.Contains(in.args, "--from="+build.name) && strings.HasSuffix(in.args, " "+binaryPath) {
				copied = true
			}
		case "RUN":
			if m := regexp.MustCompile(`apt-get install((?:\s+\S+)+?)\s*(?:&&|$)`).FindStringSubmatch(in.args); m != nil {
				for _, p := range strings.Fields(m[1]) {
					if !strings.HasPrefix(p, "-") && p != "ca-certificates" {
						t.Errorf("the final stage installs %s: only what the daemon needs (ca-certificates for PostgreSQL over TLS)", p)
					}
				}
			}
		}
	}
	if !copied {
		t.Errorf("the final stage does not COPY --from=%s the binary to %s", build.name, binaryPath)
	}
	checkLayout(t, "Dockerfile", final)

	// .dockerignore keeps the context to what the build copies.
	ign := readFile(t, "../.dockerignore")
	for _, p := range []string{".git", "bin", "deploy"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p) + `$`).MatchString(ign) {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
}

// binaryPath is where both images put the daemon (and the .deb installs
// it): what an agent image copies to use it as its init.
const binaryPath = "/usr/bin/supervisor"

// checkLayout: the image's entrypoint is the binary at binaryPath, in the
// exec form, and its default command is run.
func checkLayout(t *testing.T, what string, final stage) {
	t.Helper()
	var entry, cmd []string
	for _, in := range final.ins {
		switch in.cmd {
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Errorf("%s: ENTRYPOINT %s: want the exec (JSON) form, so signals reach the daemon: %v", what, in.args, err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(in.args), &cmd); err != nil {
				t.Errorf("%s: CMD %s: want the exec (JSON) form: %v", what, in.args, err)
			}
		}
	}
	if len(entry) != 1 || entry[0] != binaryPath {
		t.Errorf("%s: ENTRYPOINT %q: want [%s]", what, entry, binaryPath)
	}
	if len(cmd) != 1 || cmd[0] != "run" {
		t.Errorf("%s: CMD %q: want [run]", what, cmd)
	}
}

// TestContainerfile: the image scripts/image builds without a registry is
// FROM scratch around the static binary, in the Dockerfile's layout, with
// the CA bundle and nothing else; scripts/image fills its context.
func TestContainerfile(t *testing.T) {
	ss := stages(parseDockerfile(readFile(t, "image/Containerfile")))
	if len(ss) != 1 || ss[0].from != "scratch" {
		t.Fatalf("stages %+v: want one, FROM scratch", ss)
	}
	copies := map[string]string{}
	for _, in := range ss[0].ins {
		switch in.cmd {
		case "RUN":
			t.Errorf("RUN %s: FROM scratch there is nothing to run it with", in.args)
		case "COPY", "ADD":
			f := strings.Fields(in.args)
			if in.cmd == "ADD" || len(f) != 2 {
				t.Errorf("%s %s: want COPY SRC DEST", in.cmd, in.args)
				continue
			}
			copies[f[1]] = f[0]
		}
	}
	want := map[string]string{binaryPath: "supervisor", "/etc/ssl/certs/ca-certificates.crt": "ca-certificates.crt"}
	if !maps.Equal(copies, want) {
		t.Errorf("copies %v: want %v", copies, want)
	}
	checkLayout(t, "deploy/image/Containerfile", ss[0])
	script := readFile(t, "../scripts/image")
	for _, src := range want {
		if !strings.Contains(script, `"$ctx/`+src+`"`) {
			t.Errorf("scripts/image does not put %s into the build context", src)
		}
	}
	for _, s := range []string{"build_static", "deploy/image/Containerfile", "podman --runtime runc build --pull=never"} {
		if !strings.Contains(script, s) {
			t.Errorf("scripts/image does not use %s", s)
		}
	}
}

func TestParseDockerfile(t *testing.T) {
	ss := stages(parseDockerfile("# c\nFROM a:1 AS b\nRUN x \\\n  # inside\n  y\nFROM c\nENTRYPOINT [\"e\"]\n"))
	if len(ss) != 2 || ss[0].from != "a:1" || ss[0].name != "b" || ss[0].ins[0].args != "x  y" || ss[1].from != "c" || ss[1].ins[0].cmd != "ENTRYPOINT" {
		t.Errorf("parsed %+v", ss)
	}
	if f, ok := goBuildFlags("go build -trimpath -o bin/supervisor ./cmd/supervisor"); !ok || !slices.Equal(f, []string{"-trimpath"}) {
		t.Errorf("goBuildFlags: %q %v", f, ok)
	}
}
