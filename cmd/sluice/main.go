// Command sluice is the Sluice mail server and its administration tool.
//
//	sluice serve -c /etc/sluice/sluice.yaml
//	sluice user add alice@example.com
//
// Run 'sluice help' for the list of commands.
package main

import (
	"fmt"
	"os"

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
	args = moveLeadingFlags(args)
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	if c, ok := commands[name]; ok {
		return c.run(rest)
	}
	if g, ok := groups[name]; ok {
		if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
			groupUsage(os.Stderr, name, g)
			return 2
		}
		if c, ok := g[rest[0]]; ok {
			return c.run(rest[1:])
		}
		fmt.Fprintf(os.Stderr, "sluice %s: unknown command %q\n\n", name, rest[0])
		groupUsage(os.Stderr, name, g)
		return 2
	}
	switch name {
	case "help", "-h", "--help":
		usage(os.Stdout)
		return 0
	}
	fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n", name)
	usage(os.Stderr)
	return 2
}

// moveLeadingFlags lets the common flags come before the command, as in
// "sluice -c FILE user ls", by moving them after it.
func moveLeadingFlags(args []string) []string {
	var lead []string
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' && args[0] != "-h" && args[0] != "--help" {
		n := 1
		switch args[0] {
		case "-c", "--c", "-config", "--config", "-data-dir", "--data-dir":
			n = 2
		}
		n = min(n, len(args))
		lead = append(lead, args[:n]...)
		args = args[n:]
	}
	if len(lead) == 0 || len(args) == 0 {
		return append(lead, args...)
	}
	// The command and, for a group, its subcommand come first.
	cut := 1
	if _, ok := groups[args[0]]; ok && len(args) > 1 {
		cut = 2
	}
	out := append([]string{}, args[:cut]...)
	out = append(out, lead...)
	return append(out, args[cut:]...)
}
