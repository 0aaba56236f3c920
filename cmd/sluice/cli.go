package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/sluice-mail/sluice/core/admin"
	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultConfig = "/etc/sluice/sluice.yaml"

// command is one subcommand.
type command struct {
	args  string // usage of the positional arguments
	help  string
	setup func(fs *flag.FlagSet) // extra flags
	exec  func(c *ctx) error
	// nargs is the number of positional arguments: exact when max == min.
	min, max int
}

// ctx is what a running command has: its flags, arguments and outputs.
type ctx struct {
	name       string
	fs         *flag.FlagSet
	args       []string
	configPath string
	dataDir    string
	jsonOut    bool
	stdout     io.Writer
	stderr     io.Writer
	stdin      io.Reader
}

// newFlagSet makes the command's flag set, the common flags and its own,
// storing into cx. Its Usage prints to its output.
func (c command) newFlagSet(cx *ctx) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice", flag.ContinueOnError)
	fs.StringVar(&cx.configPath, "c", defaultConfig, "config `file`")
	fs.StringVar(&cx.configPath, "config", defaultConfig, "config `file`")
	fs.StringVar(&cx.dataDir, "data-dir", "", "use this data `directory` instead of the config's data_dir")
	fs.BoolVar(&cx.jsonOut, "json", false, "print JSON")
	if c.setup != nil {
		c.setup(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sluice %s [flags]\n\n%s\n\nflags:\n", c.args, c.help)
		fs.PrintDefaults()
	}
	return fs
}

// printUsage prints the command's usage and flags to w.
func (c command) printUsage(w io.Writer) {
	fs := c.newFlagSet(&ctx{})
	fs.SetOutput(w)
	fs.Usage()
}

func (c command) runWith(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cx := &ctx{stdout: stdout, stderr: stderr, stdin: stdin}
	fs := c.newFlagSet(cx)
	// What the flag package prints goes to stdout when help was asked
	// for (exit 0), to stderr for a usage error (exit 2).
	var flagOut strings.Builder
	fs.SetOutput(&flagOut)
	cx.fs = fs
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, flagOut.String())
		return 0
	}
	if err != nil {
		io.WriteString(stderr, flagOut.String())
		return 2
	}
	if len(pos) < c.min || (c.max >= 0 && len(pos) > c.max) {
		fmt.Fprintf(stderr, "usage: sluice %s\n", c.args)
		return 2
	}
	cx.args = pos
	if err := c.exec(cx); err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	return 0
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, as in "user add alice@x --password-stdin".
// "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig loads the config file, applying --data-dir. Without a config
// file, --data-dir alone is enough for the admin commands: the defaults
// fill in the rest.
func (c *ctx) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(c.configPath)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && errors.Is(err, os.ErrNotExist) && c.dataDir != "" && !c.flagSet("c") && !c.flagSet("config") {
			cfg = config.Default()
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
		} else {
			return nil, err
		}
	}
	if c.dataDir != "" {
		cfg.DataDir = c.dataDir
	}
	return cfg, nil
}

func (c *ctx) flagSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// connect returns a Caller for the data directory: the running server's
// admin socket when there is one, otherwise the data directory opened
// directly. close releases it.
func (c *ctx) connect() (caller admin.Caller, close func(), err error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) && !strings.HasSuffix(c.name, ".add") {
		// Only commands that add something set up a new data directory;
		// the others would only create an empty one at a mistyped path.
		return nil, nil, fmt.Errorf("no data directory at %s: nothing has been set up there yet", cfg.DataDir)
	}
	sock := server.SocketPath(cfg)
	cl, dialErr := admin.Dial(context.Background(), sock)
	if dialErr == nil {
		return cl, func() {}, nil
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	data, err := server.OpenData(cfg, log)
	if errors.Is(err, server.ErrInUse) {
		return nil, nil, fmt.Errorf("a sluice server is using %s, but its admin socket %s does not answer (%v)", cfg.DataDir, sock, dialErr)
	}
	if err != nil {
		return nil, nil, err
	}
	bouncer := &dsn.Bouncer{Queue: data.Queue, Store: data.Store, Hostname: cfg.Hostname, MaxReturned: int64(cfg.Remote.MaxReturnedContent), Logger: log}
	return &admin.Service{Store: data.Store, Queue: data.Queue, Bouncer: bouncer,
		PasswordPolicy: auth.PasswordPolicy{MinLength: cfg.Auth.MinPasswordLength}}, func() { data.Close() }, nil
}

// call runs one admin method.
func (c *ctx) call(method string, params, result any) error {
	c.name = method
	caller, closeFn, err := c.connect()
	if err != nil {
		return err
	}
	defer closeFn()
	return caller.Call(context.Background(), method, params, result)
}

// printJSON prints v as indented JSON.
func (c *ctx) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func (c *ctx) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// readPassword reads a new password: from the first line of stdin with
// --password-stdin, otherwise from the terminal, twice.
func (c *ctx) readPassword(fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if err == io.EOF && line == "" {
			return "", errors.New("no password on stdin")
		}
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("empty password on stdin")
		}
		return pw, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("stdin is not a terminal: use --password-stdin to pipe the password")
	}
	fmt.Fprint(c.stderr, "Password: ")
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(c.stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(c.stderr, "Again: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(c.stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	if len(a) == 0 {
		return "", errors.New("empty password")
	}
	return string(a), nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Sluice %s: a mail server and mail gateway.\n\nusage: sluice COMMAND [ARGS] [flags]\n\ncommands:\n", version)
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	for n := range groups {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, n := range names {
		if c, ok := commands[n]; ok {
			fmt.Fprintf(tw, "  %s\t%s\n", c.args, summary(c.help))
			continue
		}
		g := groups[n]
		var subs []string
		for s := range g {
			subs = append(subs, s)
		}
		sort.Strings(subs)
		for _, s := range subs {
			fmt.Fprintf(tw, "  %s\t%s\n", g[s].args, summary(g[s].help))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nEvery command takes -c FILE (default %s) and --data-dir DIR, before or after\nthe command. Listings take --json. 'sluice help COMMAND' or 'sluice COMMAND --help'\nshows a command's flags; 'sluice --version' the version.\n", defaultConfig)
}

func groupUsage(w io.Writer, name string, g map[string]command) {
	fmt.Fprintf(w, "usage: sluice %s COMMAND [ARGS] [flags]\n\n", name)
	var subs []string
	for s := range g {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range subs {
		fmt.Fprintf(tw, "  %s\t%s\n", g[s].args, summary(g[s].help))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n'sluice help %s COMMAND' shows a command's flags.\n", name)
}

// summary is the first sentence of a command's help, for the lists of
// commands: the help's lines up to the first that ends a sentence.
func summary(help string) string {
	var out []string
	for _, line := range strings.Split(help, "\n") {
		out = append(out, line)
		if strings.HasSuffix(line, ".") || strings.HasSuffix(line, ".)") {
			break
		}
	}
	return strings.Join(out, " ")
}

// stdinIsTerminal reports whether the process's stdin is a terminal, to
// ask on; tests replace it.
var stdinIsTerminal = func() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

// confirm asks question on the terminal and returns nil for a yes. Without
// a terminal to ask on it returns an error that names the --yes flag.
func (c *ctx) confirm(question string) error {
	if !stdinIsTerminal() {
		return errors.New("stdin is not a terminal to ask for confirmation on: add --yes to go ahead")
	}
	fmt.Fprintf(c.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(c.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed; nothing was changed")
}
