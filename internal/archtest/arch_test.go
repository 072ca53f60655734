package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/agent-supervisor/supervisor/"

// tiers place each package in the flow: a package imports only packages
// of a lower tier. The sinks sit low, so that anything may feed them:
// store and events import nothing of the flow; metrics counts what the
// reaper did, so it sits above it, fed by the assembly. A new package gets
// a tier here, and a doc.go saying what it owns and may import.
var tiers = map[string]int{
	// What the kernel and the disk give, plain protocols, and the store:
	// no imports of this module.
	"internal/procevents": 0, "internal/cgroupinfo": 0, "internal/statefile": 0,
	"internal/control": 0, "internal/hook": 0, "internal/store": 0, "internal/testutil": 0,
	"internal/archtest": 0, "internal/termtext": 0,
	"internal/tracker":  1, // the table, sessions, deadlines, max age and leftovers
	"internal/events":   1, // the live stream: kill rows and cgroup info, nothing else
	"internal/resource": 2, "internal/psi": 2, "internal/health": 2, "internal/psi/psitest": 2,
	"internal/policy/limits": 3, "internal/policy/pressure": 3, // the policies
	"internal/reap":    4, // signals, over pidfds
	"internal/initd":   5, // supervisor init: reaps and forwards
	"internal/metrics": 5, // counts reaps, snapshots, stream clients
	"internal/config":  8, "internal/api": 8,
	"internal/cli": 9, "internal/daemon": 9, "internal/top": 9, // the clients, and the assembly
	"cmd/supervisor":                   10,
	"internal/config/internal/gendocs": 10, // go generate ./internal/config
	"e2e":                              10,
}

// packages returns every Go package directory of the module (relative,
// slash-separated): not those of the modules of their own below it
// (deploy/, packaging/: a directory with a go.mod).
func packages(t *testing.T) (root string, dirs []string) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch {
			case strings.HasPrefix(d.Name(), "."), d.Name() == "testdata", rel == "scripts":
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // a module of its own
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") {
			dir := filepath.ToSlash(filepath.Dir(rel))
			if len(dirs) == 0 || dirs[len(dirs)-1] != dir {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return root, slicesCompact(dirs)
}

func slicesCompact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// fileNames maps a parsed file to its name.
var fileNames = map[*ast.File]string{}

func fset(f *ast.File) string { return fileNames[f] }

func parseDir(t *testing.T, root, dir string) []*ast.File {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	fset := token.NewFileSet()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(root, dir, e.Name()), nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		fileNames[f] = e.Name()
		files = append(files, f)
	}
	return files
}

// TestImportsFollowTheFlow: no package imports one further down the flow.
func TestImportsFollowTheFlow(t *testing.T) {
	root, dirs := packages(t)
	for _, dir := range dirs {
		tier, ok := tiers[dir]
		if !ok {
			t.Errorf("%s has no tier in archtest's table: place it in the flow (and give it a doc.go)", dir)
			continue
		}
		for _, f := range parseDir(t, root, dir) {
			if strings.HasSuffix(fset(f), "_test.go") {
				continue // a test may use another package's helpers
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if !strings.HasPrefix(path, module) {
					continue
				}
				dep := strings.TrimPrefix(path, module)
				dt, ok := tiers[dep]
				if !ok {
					t.Errorf("%s imports %s, which has no tier", dir, dep)
					continue
				}
				if dt >= tier && dep != dir {
					t.Errorf("%s (tier %d) imports %s (tier %d): a package may import only what comes before it in the flow", dir, tier, dep, dt)
				}
			}
		}
	}
}

// TestEveryPackageHasDoc: each package of internal/ (and e2e) says in a
// doc.go what it owns and what it may import.
func TestEveryPackageHasDoc(t *testing.T) {
	root, dirs := packages(t)
	for _, dir := range dirs {
		if dir == "cmd/supervisor" || dir == "internal/config/internal/gendocs" {
			continue // commands: the package comment is in main.go
		}
		if _, err := os.Stat(filepath.Join(root, dir, "doc.go")); err != nil {
			t.Errorf("%s has no doc.go", dir)
		}
	}
}

// knownHubs are the types that still break the rule, with the number of
// files they may not exceed while they are split up; the number may only
// go down. None is left: the tracker's table and deadline queue, which
// grew one file per capability before the rule, now hand each capability
// to a part of its own.
var knownHubs = map[string]int{}

// TestNoHub: no type has methods in more than three files of its package.
func TestNoHub(t *testing.T) {
	root, dirs := packages(t)
	for _, dir := range dirs {
		ents, _ := os.ReadDir(filepath.Join(root, dir))
		files := map[string]map[string]bool{} // type -> files with its methods
		fset := token.NewFileSet()
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(root, dir, e.Name()), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Recv == nil || len(fd.Recv.List) == 0 {
					continue
				}
				typ := fd.Recv.List[0].Type
				if s, ok := typ.(*ast.StarExpr); ok {
					typ = s.X
				}
				if ix, ok := typ.(*ast.IndexExpr); ok {
					typ = ix.X
				}
				id, ok := typ.(*ast.Ident)
				if !ok {
					continue
				}
				if files[id.Name] == nil {
					files[id.Name] = map[string]bool{}
				}
				files[id.Name][e.Name()] = true
			}
		}
		for typ, fs := range files {
			if n, ok := knownHubs[dir+"."+typ]; ok && len(fs) <= n {
				continue
			}
			if len(fs) > 3 {
				var names []string
				for n := range fs {
					names = append(names, n)
				}
				sort.Strings(names)
				t.Errorf("%s: type %s has methods in %d files (%s): at most three; give the part its own type", dir, typ, len(fs), strings.Join(names, ", "))
			}
		}
	}
}

// TestEntryPoint: cmd/supervisor picks the subcommand and calls into
// internal/: at most 300 lines of non-test code.
func TestEntryPoint(t *testing.T) {
	root, _ := packages(t)
	dir := filepath.Join(root, "cmd", "supervisor")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(b), "\n")
	}
	if lines > 300 {
		t.Errorf("cmd/supervisor has %d lines of non-test code: at most 300 (it picks the subcommand; the work is in internal/)", lines)
	}
}

// TestReadmeLayout: README's Layout section names every package and names
// nothing that is not there.
func TestReadmeLayout(t *testing.T) {
	root, dirs := packages(t)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n## Layout\n")
	if i < 0 {
		t.Fatal("README.md has no ## Layout section")
	}
	text = text[i+len("\n## Layout\n"):]
	if j := strings.Index(text, "\n## "); j >= 0 {
		text = text[:j]
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == ' ' || strings.HasPrefix(line, "```") {
			continue
		}
		name := strings.Fields(line)[0]
		listed[strings.TrimSuffix(name, "/")] = true
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("README's Layout names %s, which is not in the tree", name)
		}
	}
	for _, dir := range dirs {
		if strings.HasPrefix(dir, "internal/config/internal/") || dir == "internal/psi/psitest" {
			continue // inside a listed package, and named in its line
		}
		if !listed[dir] {
			t.Errorf("README's Layout does not name the package %s", dir)
		}
	}
}
