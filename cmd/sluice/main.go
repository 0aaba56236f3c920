// Command sluice is the Sluice mail server and its administration tool.
//
//	sluice serve -c /etc/sluice/sluice.yaml
//	sluice user add alice@example.com
//
// Run 'sluice help' for the list of commands, 'sluice help COMMAND' for
// one command's flags.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sluice-mail/sluice/core/pluginhost"
)

func main() {
	// sluice serve re-executes itself as the plugin launcher when the
	// plugins run as a user of their own (plugin_user).
	if len(os.Args) == 2 && os.Args[1] == pluginhost.LauncherArg {
		os.Exit(pluginhost.RunLauncher())
	}
	os.Exit(run(os.Args[1:]))
}

// run executes one command line and returns the process exit status: 0
// for success, 1 for a failure, 2 for a usage error.
func run(args []string) int {
	return runIO(args, os.Stdin, os.Stdout, os.Stderr)
}

// runIO is run with its inputs and outputs. Help that was asked for
// (help, -h, --help, at any level) goes to stdout with exit status 0; the
// usage printed for a usage error goes to stderr with status 2.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	words, lead, rest := splitCommandLine(args)
	wantHelp := slices.ContainsFunc(lead, isHelpFlag)
	if len(words) == 0 {
		switch {
		case wantHelp:
			usage(stdout)
			return 0
		case slices.Contains(lead, "--version") || slices.Contains(lead, "-version"):
			fmt.Fprintln(stdout, "sluice", version)
			return 0
		}
		usage(stderr)
		return 2
	}
	if words[0] == "help" {
		return help(append(words[1:], rest...), stdout, stderr)
	}
	name := words[0]
	if c, ok := commands[name]; ok {
		return c.runWith(append(lead, rest...), stdin, stdout, stderr)
	}
	if g, ok := groups[name]; ok {
		if len(words) == 1 {
			if wantHelp {
				groupUsage(stdout, name, g)
				return 0
			}
			groupUsage(stderr, name, g)
			return 2
		}
		if words[1] == "help" {
			return help(append([]string{name}, rest...), stdout, stderr)
		}
		if c, ok := g[words[1]]; ok {
			return c.runWith(append(lead, rest...), stdin, stdout, stderr)
		}
		fmt.Fprintf(stderr, "sluice %s: unknown command %q\n\n", name, words[1])
		groupUsage(stderr, name, g)
		return 2
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", name)
	usage(stderr)
	return 2
}

// help prints the help for the command named by words ("", "user",
// "user add") to stdout, as 'sluice help' does.
func help(words []string, stdout, stderr io.Writer) int {
	if len(words) == 0 {
		usage(stdout)
		return 0
	}
	if c, ok := commands[words[0]]; ok && len(words) == 1 {
		c.printUsage(stdout)
		return 0
	}
	if g, ok := groups[words[0]]; ok {
		if len(words) == 1 {
			groupUsage(stdout, words[0], g)
			return 0
		}
		if c, ok := g[words[1]]; ok && len(words) == 2 {
			c.printUsage(stdout)
			return 0
		}
	}
	fmt.Fprintf(stderr, "sluice help: unknown command %q\n\n", strings.Join(words, " "))
	usage(stderr)
	return 2
}

func isHelpFlag(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// commonValueFlags are the flags every command takes that have a value.
var commonValueFlags = []string{"-c", "--c", "-config", "--config", "-data-dir", "--data-dir"}

// splitCommandLine finds the command's words in a command line: "serve",
// "user add", "help user add". The flags that come before or between them
// (lead), such as the common flags in "sluice -c FILE user ls" or "sluice
// user -c FILE ls", are returned apart from what follows the words (rest),
// so that they can be handed to the command as if they came after it, as
// with git, kubectl or go. A flag there is taken to have a value only when
// it is one of the common ones (-c, --config, --data-dir).
func splitCommandLine(args []string) (words, lead, rest []string) {
	want := 1
	i := 0
	for i < len(args) && len(words) < want {
		a := args[i]
		if a == "--" {
			break
		}
		if len(a) > 1 && a[0] == '-' {
			n := 1
			if slices.Contains(commonValueFlags, a) {
				n = 2
			}
			n = min(n, len(args)-i)
			lead = append(lead, args[i:i+n]...)
			i += n
			continue
		}
		words = append(words, a)
		i++
		switch {
		case len(words) == 1 && a == "help":
			want = 2 // help COMMAND
		case len(words) == 1:
			if _, ok := groups[a]; ok {
				want = 2
			}
		case len(words) == 2 && words[0] == "help":
			if _, ok := groups[a]; ok {
				want = 3 // help GROUP COMMAND
			}
		}
	}
	return words, lead, args[i:]
}
