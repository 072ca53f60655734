package config

import (
	"fmt"
	"io"
	"strings"
)

// The --help texts, made from the options and commands tables as the man
// page and docs/configuration.md are (docs.go).

const helpWidth = 80

// topNote follows the command list of supervisor --help.
const topNote = "extend, keep, unkeep, kill and reload talk to the daemon's --control-socket (root, or members of its " +
	"--control-group); status, health and events read the API socket beside it. PID@START in place of PID " +
	"(START as /agents shows it) is refused if PID is now another process."

// PrintHelp writes cmd's help to w; cmd "" is supervisor --help: the
// commands, then the daemon options.
func PrintHelp(w io.Writer, cmd string) {
	if cmd == "" {
		printTopHelp(w)
		return
	}
	c := lookupCommand(cmd)
	if c == nil {
		fmt.Fprintf(w, "usage: supervisor %s [flags]\n\n", cmd)
		printOptions(w)
		return
	}
	fmt.Fprintf(w, "usage: supervisor %s\n\n", c.synopsis)
	fmt.Fprint(w, wrap(c.description(), 2, 2, helpWidth))
	if fl := c.documented(); len(fl) > 0 {
		fmt.Fprint(w, "\nflags:\n")
		for _, f := range fl {
			fmt.Fprint(w, wrap(f.helpText(), 2, 28, helpWidth, f.usageName()))
		}
	}
	if c.daemon {
		fmt.Fprintln(w)
		printOptions(w)
	}
}

func printTopHelp(w io.Writer) {
	fmt.Fprint(w, "usage: supervisor COMMAND [flags]\n\ncommands:\n")
	var daemonCmds []string
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\n", c.synopsis)
		fmt.Fprint(w, wrap(c.summary, 6, 6, helpWidth))
		if c.daemon {
			daemonCmds = append(daemonCmds, c.name)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, wrap(topNote, 0, 0, helpWidth))
	fmt.Fprintln(w)
	fmt.Fprint(w, wrap(joinAnd(daemonCmds)+" take the daemon options below; supervisor COMMAND --help lists a command's own flags.", 0, 0, helpWidth))
	fmt.Fprintln(w)
	printOptions(w)
}

// printOptions lists the daemon options, hidden ones left out.
func printOptions(w io.Writer) {
	fmt.Fprint(w, wrap("Daemon options (each has an environment variable, also a --config file key; a flag wins over the "+
		"environment, the environment over the file, the file over the default):", 0, 0, helpWidth))
	for _, o := range options {
		if o.hidden {
			continue
		}
		name := "  (env only)"
		if o.flag != "" {
			name = "  --" + o.flag
		}
		fmt.Fprintf(w, "%-22s %-30s default %s\n", name, o.env, o.defaultText())
		fmt.Fprint(w, wrap(o.help, 24, 24, helpWidth))
	}
}

// defaultText is how the default reads: shown, def, or none.
func (o *option) defaultText() string {
	switch {
	case o.shown != "":
		return o.shown
	case o.def == "":
		return "none"
	}
	return o.def
}

// usageName is the flag as its help line names it: --timeout DURATION.
func (f *cmdFlag) usageName() string {
	if f.arg == "" {
		return "--" + f.name
	}
	return "--" + f.name + " " + f.arg
}

// helpText is the flag's help with its default.
func (f *cmdFlag) helpText() string {
	if f.def == "" {
		return f.help
	}
	return f.help + " (default " + f.def + ")"
}

// description is what the command does, as sentences.
func (c *command) description() string {
	s := sentence(c.summary)
	if c.more != "" {
		s += " " + c.more
	}
	return s
}

// sentence makes a summary a sentence: a capital, a full stop.
func sentence(s string) string {
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// joinAnd joins names as a list in prose: "a, b and c".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// wrap fills text into lines of at most width columns (a longer word
// stands alone), the first indented by first, the others by rest. A label
// goes before the text on the first line, from column first; the text
// starts at column rest, on a line of its own if the label reaches it.
func wrap(text string, first, rest, width int, label ...string) string {
	var b strings.Builder
	line := strings.Repeat(" ", first)
	if len(label) > 0 {
		line += label[0]
		if len(line) >= rest {
			b.WriteString(line + "\n")
			line = ""
		}
		line += strings.Repeat(" ", rest-len(line))
	}
	empty := true // no word on the line yet
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line, empty = strings.Repeat(" ", rest), true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	b.WriteString(strings.TrimRight(line, " ") + "\n")
	return b.String()
}
