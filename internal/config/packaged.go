package config

import (
	"fmt"
	"strings"
)

// The files the package installs besides the binary, the unit and the man
// page, made from the same tables as the help (packaging/ puts them in the
// .deb and the .tar.gz): the config file with every setting commented out,
// and the bash, zsh and fish completions of the subcommands and their
// flags. `go generate ./internal/config` writes them beside the docs;
// TestDocsGenerated fails when a committed one differs.

// Generated files of the package, by path from the repository's root.
const (
	ConfPath           = "packaging/supervisor.conf"
	BashCompletionPath = "packaging/completions/supervisor.bash"
	ZshCompletionPath  = "packaging/completions/_supervisor"
	FishCompletionPath = "packaging/completions/supervisor.fish"
)

// PackagedConfPath is where the package installs the config file, and the
// unit's --config names.
const PackagedConfPath = "/etc/agent-supervisor/supervisor.conf"

// packaged is the package's generated files, by path.
func packaged() map[string][]byte {
	return map[string][]byte{
		ConfPath:           ConfFile(),
		BashCompletionPath: BashCompletion(),
		ZshCompletionPath:  ZshCompletion(),
		FishCompletionPath: FishCompletion(),
	}
}

// ConfFile is the config file the package installs: every visible option
// but --config itself, its help as a comment, then the line commented out
// at its default.
func ConfFile() []byte {
	var b strings.Builder
	b.WriteString(wrap(`# `+PackagedConfPath+`: the agent supervisor's settings, read by the unit's
supervisor run --config and re-read on systemctl reload agent-supervisor (SIGHUP); what a reload does not apply
is marked "needs a restart". One KEY=VALUE a line (the daemon's environment variables; a list is comma-separated);
blank lines and lines starting with # are ignored. The environment, then the command line, win over this file.
Every setting is here, commented out at its default: remove the # to change one. The database password belongs in a
file of its own, mode 0600, named by DATABASE_URL_FILE: not in this file. Generated from the options table of the
source (go generate ./internal/config); supervisor(8) and docs/configuration.md say the same.`, 0, 2, 78))
	for _, o := range visible() {
		if o.flag == "config" {
			continue
		}
		help := sentence(o.help)
		if o.flag != "" {
			help = "--" + o.flag + ": " + help
		}
		if o.restart {
			help += " Needs a restart."
		}
		b.WriteString("\n" + wrap(help, 0, 2, 78))
		def := o.def
		if def == "" && o.shown != "" && !strings.Contains(o.help, "default") {
			fmt.Fprintf(&b, "# (default: %s)\n", o.shown)
		}
		fmt.Fprintf(&b, "#%s=%s\n", o.env, def)
	}
	// wrap indents by spaces; a comment's lines start with "# ".
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  ") {
			lines[i] = "# " + strings.TrimLeft(l, " ")
		} else if l != "" && !strings.HasPrefix(l, "#") {
			lines[i] = "# " + l
		}
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// completionFlag is a flag as a completion offers it.
type completionFlag struct {
	name, desc string
	value      bool // takes a value
}

// completionFlags is every flag cmd takes, documented: the daemon options
// for the commands that take them, then its own.
func completionFlags(c command) []completionFlag {
	var out []completionFlag
	if c.daemon {
		for _, o := range visible() {
			if o.flag != "" {
				out = append(out, completionFlag{o.flag, short(o.help), !o.isBool()})
			}
		}
	}
	for _, f := range c.documented() {
		out = append(out, completionFlag{f.name, short(f.help), f.kind != kindBool})
	}
	return append(out, completionFlag{name: "help", desc: "print the command's help"})
}

// short is help text cut to a completion's description: its first clause,
// at most 70 columns.
func short(s string) string {
	if i := strings.Index(s, "; "); i > 0 {
		s = s[:i]
	}
	if i := strings.Index(s, " ("); i > 0 {
		s = s[:i]
	}
	if len(s) > 70 {
		s = s[:strings.LastIndex(s[:67], " ")] + "..."
	}
	return s
}

const completionHeader = "completion for supervisor(8), the agent supervisor: its subcommands and their flags.\n" +
	"# Generated from the commands and options tables of the source (go generate ./internal/config).\n"

// BashCompletion completes the subcommand, then the flags of the command
// given; a value (a path, a duration) falls back to bash's default.
func BashCompletion() []byte {
	var b strings.Builder
	b.WriteString("# bash " + completionHeader)
	b.WriteString("_supervisor() {\n")
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} flags\n")
	b.WriteString("\tCOMPREPLY=()\n")
	b.WriteString("\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n")
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W '%s --help --version' -- \"$cur\"))\n", commandList())
	b.WriteString("\t\treturn\n\tfi\n")
	b.WriteString("\tcase $cur in -*) ;; *) return ;; esac\n")
	b.WriteString("\tcase ${COMP_WORDS[1]} in\n")
	for _, c := range commands {
		var names []string
		for _, f := range completionFlags(c) {
			names = append(names, "--"+f.name)
		}
		fmt.Fprintf(&b, "\t%s) flags='%s' ;;\n", c.name, strings.Join(names, " "))
	}
	b.WriteString("\t*) return ;;\n\tesac\n")
	b.WriteString("\tCOMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n")
	b.WriteString("}\n")
	b.WriteString("complete -o default -F _supervisor supervisor\n")
	return []byte(b.String())
}

func commandList() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, " ")
}

// ZshCompletion is the same for zsh, with descriptions.
func ZshCompletion() []byte {
	var b strings.Builder
	b.WriteString("#compdef supervisor\n# zsh " + completionHeader)
	b.WriteString("_supervisor() {\n\tlocal -a commands flags\n\tcommands=(\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "\t\t'%s:%s'\n", c.name, zqBody(short(c.summary)))
	}
	b.WriteString("\t)\n")
	b.WriteString("\tif (( CURRENT == 2 )); then\n\t\t_describe -t commands 'supervisor command' commands\n\t\treturn\n\tfi\n")
	b.WriteString("\tif [[ $PREFIX != -* ]]; then\n\t\t_files\n\t\treturn\n\tfi\n")
	b.WriteString("\tcase $words[2] in\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "\t%s)\n\t\tflags=(\n", c.name)
		for _, f := range completionFlags(c) {
			fmt.Fprintf(&b, "\t\t\t'--%s:%s'\n", f.name, zqBody(f.desc))
		}
		b.WriteString("\t\t)\n\t\t;;\n")
	}
	b.WriteString("\t*) return 1 ;;\n\tesac\n")
	b.WriteString("\t_describe -t flags 'flag' flags\n}\n")
	b.WriteString("_supervisor \"$@\"\n")
	return []byte(b.String())
}

// zqBody escapes a description for a single-quoted name:description word.
func zqBody(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, ":", `\:`), "'", `'\''`)
}

// FishCompletion is the same for fish.
func FishCompletion() []byte {
	fq := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'" }
	var b strings.Builder
	b.WriteString("# fish " + completionHeader)
	for _, c := range commands {
		fmt.Fprintf(&b, "complete -c supervisor -n __fish_use_subcommand -f -a %s -d %s\n", c.name, fq(short(c.summary)))
	}
	// One line a flag, naming every subcommand that takes it with the same
	// description (run and init share most of theirs): fish offers a line's
	// flag after any subcommand it names, as if each had its own line.
	type flagLine struct {
		name, r, desc string
	}
	var order []flagLine
	takers := map[flagLine][]string{}
	for _, c := range commands {
		for _, f := range completionFlags(c) {
			l := flagLine{name: f.name, desc: f.desc}
			if f.value {
				l.r = " -r"
			}
			if takers[l] == nil {
				order = append(order, l)
			}
			takers[l] = append(takers[l], c.name)
		}
	}
	for _, l := range order {
		fmt.Fprintf(&b, "complete -c supervisor -n '__fish_seen_subcommand_from %s' -l %s%s -d %s\n", strings.Join(takers[l], " "), l.name, l.r, fq(l.desc))
	}
	return []byte(b.String())
}
