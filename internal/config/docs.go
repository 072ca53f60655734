package config

import (
	"bytes"
	"embed"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// docs/configuration.md and the man page supervisor(8) are made from the
// options and commands tables and the prose of templates/: `go generate
// ./internal/config` writes them (internal/gendocs), TestDocsGenerated
// fails when a committed one differs.

//go:generate go run ./internal/gendocs -root ../..

//go:embed templates
var templates embed.FS

// Generated files, by path from the repository's root.
const (
	ReferencePath = "docs/configuration.md"
	ManPagePath   = "docs/supervisor.8"
)

// Generated is every generated file's content, by path from the
// repository's root.
func Generated() (map[string][]byte, error) {
	md, err := Reference()
	if err != nil {
		return nil, err
	}
	man, err := ManPage()
	if err != nil {
		return nil, err
	}
	files := packaged()
	files[ReferencePath], files[ManPagePath] = md, man
	return files, nil
}

// docData is what the templates are given. The text fields are already
// in the template's language (Markdown or roff).
type docData struct {
	Options, Commands, Environment, Synopsis string
	Reloaded, NeedRestart                    string
	DaemonCommands                           string
	StateDir, ControlSocket, APISocket       string
	DefaultListen                            string
}

func execute(name string, d docData) ([]byte, error) {
	t, err := template.ParseFS(templates, "templates/"+name)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// visible is the options help and docs show: not the test knobs.
func visible() []option {
	var out []option
	for _, o := range options {
		if !o.hidden {
			out = append(out, o)
		}
	}
	return out
}

// daemonCommands names the commands that take the daemon options.
func daemonCommands(code func(string) string) string {
	var names []string
	for _, c := range commands {
		if c.daemon {
			names = append(names, code(c.name))
		}
	}
	return joinAnd(names)
}

// reloadLists names the options a reload applies and those it does not,
// as flags (or variables, for those without one).
func reloadLists(code func(string) string) (reloaded, restart string) {
	var r, n []string
	for _, o := range visible() {
		name := o.env
		if o.flag != "" {
			name = "--" + o.flag
		}
		if o.flag == "config" {
			continue // the file itself is what a reload reads
		}
		if o.restart {
			n = append(n, code(name))
		} else {
			r = append(r, code(name))
		}
	}
	return joinAnd(r), joinAnd(n)
}

// Reference is docs/configuration.md.
func Reference() ([]byte, error) {
	md := func(s string) string { return "`" + s + "`" }
	d := docData{Options: mdOptions(), Commands: mdCommands(), DaemonCommands: daemonCommands(md),
		StateDir: stateDirDefault(), ControlSocket: DefaultControlSocket, APISocket: APISocketBeside(DefaultControlSocket),
		DefaultListen: DefaultListen}
	d.Reloaded, d.NeedRestart = reloadLists(md)
	return execute("configuration.md.tmpl", d)
}

func stateDirDefault() string {
	for _, o := range options {
		if o.flag == "state-dir" {
			return o.def
		}
	}
	return ""
}

// mdCode matches what plain text names that Markdown sets as code: a
// flag (--max-age, --forward-to=group), a variable (REAPER_KEEP=1), a path
// or endpoint (/proc/1/root).
var mdCode = regexp.MustCompile(`--[a-z][a-z0-9-]*(=[^\s,;)]+)?|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+(=[^\s,;)]+)?|(^|[\s(])/[^\s,;)]*[^\s,;).:]`)

// mdText turns plain help text into Markdown: the names above as code,
// Markdown's own characters escaped elsewhere.
func mdText(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range mdCode.FindAllStringIndex(s, -1) {
		start := m[0]
		for start < m[1] && (s[start] == ' ' || s[start] == '(' || s[start] == '\t') {
			start++
		}
		b.WriteString(mdEscape(s[last:start]))
		b.WriteString("`" + s[start:m[1]] + "`")
		last = m[1]
	}
	b.WriteString(mdEscape(s[last:]))
	return b.String()
}

var mdEscaper = strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "<", "&lt;", ">", "&gt;", "`", "\\`", "[", `\[`, "]", `\]`)

func mdEscape(s string) string { return mdEscaper.Replace(s) }

// cell makes text fit a table cell: a | would end it.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func mdOptions() string {
	var b strings.Builder
	b.WriteString("| flag | variable, config key | default | reload | meaning |\n|---|---|---|---|---|\n")
	for _, o := range visible() {
		flag, env := "", "`"+o.env+"`"
		if o.flag != "" {
			flag = "`--" + o.flag + "`"
		}
		if o.repeat {
			flag += " (repeatable)"
			env += " (comma-separated)"
		}
		def := "none"
		switch {
		case o.shown != "":
			def = mdText(o.shown)
		case o.def != "":
			def = "`" + o.def + "`"
		}
		reload := "applied"
		switch {
		case o.restart:
			reload = "restart"
		case o.flag == "config":
			reload = "re-read"
		}
		meaning := o.doc
		if meaning == "" {
			meaning = mdText(o.help)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", flag, env, cell(def), reload, cell(meaning))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func mdCommands() string {
	var b strings.Builder
	for i, c := range commands {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "### supervisor %s\n\n`supervisor %s`\n\n%s\n", c.name, c.synopsis, mdText(c.description()))
		if c.daemon {
			b.WriteString("\nIt takes the [daemon options](#configuration).\n")
		}
		if fl := c.documented(); len(fl) > 0 {
			b.WriteString("\n| flag | default | meaning |\n|---|---|---|\n")
			for _, f := range fl {
				def := "none"
				switch {
				case f.kind == kindBool:
					def = "false"
				case f.def != "":
					def = "`" + f.def + "`"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.usageName(), def, cell(mdText(f.help)))
			}
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// ManPage is supervisor(8), in roff for the man macros.
func ManPage() ([]byte, error) {
	bold := func(s string) string { return `\fB` + roffEscape(s) + `\fR` }
	d := docData{Options: manOptions(), Commands: manCommands(), Environment: manEnvironment(), Synopsis: manSynopsis(),
		DaemonCommands: daemonCommands(bold), StateDir: roffEscape(stateDirDefault()),
		ControlSocket: roffEscape(DefaultControlSocket), APISocket: roffEscape(APISocketBeside(DefaultControlSocket)),
		DefaultListen: roffEscape(DefaultListen)}
	d.Reloaded, d.NeedRestart = reloadLists(bold)
	return execute("supervisor.8.tmpl", d)
}

// roffEscape makes plain text safe in a roff text line: a backslash is
// the escape character; a flag, a path or a variable is never hyphenated
// (\%), and its hyphen-minus stays one (\-), not a hyphen.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return roffWord.ReplaceAllStringFunc(s, func(m string) string {
		// \% starts the word: within one it would mark a place to break.
		sub := roffWord.FindStringSubmatch(m)
		return sub[1] + `\%` + sub[2] + strings.ReplaceAll(sub[3], "-", `\-`)
	})
}

// roffWord matches a flag, a path or a variable, with the start of its
// word.
var roffWord = regexp.MustCompile(`(^|\s)([("'\[]*)(--[a-z][a-z0-9-]*|--|/\S*|[A-Z][A-Z0-9]*_[A-Z0-9_]+)`)

// roffText is plain text as a roff paragraph: flags bold, and a line that
// would start with a control character protected.
func roffText(s string) string {
	s = roffEscape(s)
	s = roffBoldFlag.ReplaceAllString(s, `${1}${2}\fB$3\fR`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

var roffBoldFlag = regexp.MustCompile(`(^|\s)(\\%[("'\[]*)(\\-\\-[a-z][a-z0-9\\-]*)`)

// roffSynopsis sets a usage line: the command bold, flags bold,
// placeholders (PID, DURATION, flags) italic.
func roffSynopsis(name, synopsis string) string {
	rest := strings.TrimPrefix(synopsis, name)
	rest = roffEscape(rest)
	rest = roffPlaceholder.ReplaceAllString(rest, `\fI$1\fR`)
	rest = roffBoldFlag.ReplaceAllString(rest, `${1}${2}\fB$3\fR`)
	return `\fB` + roffEscape(name) + `\fR` + rest
}

var roffPlaceholder = regexp.MustCompile(`\b([A-Z]{2,}|flags)\b`)

func manSynopsis() string {
	var b strings.Builder
	b.WriteString(".in +4n\n")
	for _, c := range commands {
		fmt.Fprintf(&b, ".ti -4n\n\\fBsupervisor\\fR %s\n.br\n", roffSynopsis(c.name, c.synopsis))
	}
	b.WriteString(".in")
	return b.String()
}

func manCommands() string {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, ".TP\n%s\n%s\n", roffSynopsis(c.name, c.synopsis), roffText(c.description()))
		if c.daemon {
			b.WriteString("It takes the daemon options (\\fBOPTIONS\\fR).\n")
		}
		if fl := c.documented(); len(fl) > 0 {
			b.WriteString(".RS\n")
			for _, f := range fl {
				tag := `\fB` + roffEscape("--"+f.name) + `\fR`
				if f.arg != "" {
					tag += ` \fI` + f.arg + `\fR`
				}
				fmt.Fprintf(&b, ".TP\n%s\n%s\n", tag, roffText(sentence(f.helpText())))
			}
			b.WriteString(".RE\n")
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// isBool says an option is a boolean: it may stand alone (--dry-run).
func (o *option) isBool() bool { return o.def == "true" || o.def == "false" }

func manOptions() string {
	var b strings.Builder
	for _, o := range visible() {
		if o.flag == "" {
			continue // in ENVIRONMENT alone
		}
		tag := `\fB` + roffEscape("--"+o.flag) + `\fR`
		if !o.isBool() {
			tag += ` \fIvalue\fR`
		}
		fmt.Fprintf(&b, ".TP\n%s\n%s\n", tag, roffText(sentence(o.help)))
		fmt.Fprintf(&b, "Variable \\fB%s\\fR; default %s.", roffEscape(o.env), roffText(o.defaultText()))
		if o.repeat {
			b.WriteString(" The flag may repeat; the variable is comma-separated.")
		}
		if o.restart {
			b.WriteString(" A reload does not apply it: it needs a restart.")
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func manEnvironment() string {
	var b strings.Builder
	for _, o := range visible() {
		fmt.Fprintf(&b, ".TP\n\\fB%s\\fR\n", roffEscape(o.env))
		if o.flag != "" {
			fmt.Fprintf(&b, "As \\fB%s\\fR.\n", roffEscape("--"+o.flag))
			continue
		}
		fmt.Fprintf(&b, "%s Default %s.\n", roffText(sentence(o.help)), roffText(o.defaultText()))
	}
	return strings.TrimSuffix(b.String(), "\n")
}
