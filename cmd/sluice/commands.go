package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/configs"
	"github.com/sluice-mail/sluice/core/admin"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/pluginset"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/server"
	"github.com/sluice-mail/sluice/core/trace"
	"github.com/sluice-mail/sluice/sdk"
)

var commands = map[string]command{
	"serve": {
		args: "serve",
		help: "Run the mail server in the foreground until SIGINT or SIGTERM.",
		exec: serve, max: 0,
	},
	"version": {
		args: "version",
		help: "Print the version.",
		exec: func(c *ctx) error { fmt.Fprintln(c.stdout, "sluice", version); return nil },
		max:  0,
	},
	"status": {
		args: "status",
		help: "Say whether a server is running on the data directory, and how full the queue is.",
		exec: status, max: 0,
	},
	"verify": {
		args: "verify",
		help: "Reconcile the mailbox index with the message files: remove files no message refers to,\nand report messages whose file is missing.",
		exec: verify, max: 0,
	},
}

var groups = map[string]map[string]command{
	"config": {
		"check": {args: "config check", help: "Validate a config file, and who can change the files it names, without starting anything.\nWarns about risky settings, such as submission listeners without a sender policy.", exec: configCheck, max: 0},
		"example": {args: "config example NAME", help: "Print a shipped example config: dev, standalone or gateway.",
			exec: configExample, min: 1, max: 1},
		"defaults": {args: "config defaults", help: "Print every config key with its documentation and default value.\nWith --plugin, the keys of that plugin's config mapping instead (docs/plugins.md).",
			setup: func(fs *flag.FlagSet) {
				fs.String("plugin", "", "a plugin's `name` (in plugins.dir) or path")
			},
			exec: configDefaults, max: 0},
	},
	"domain": {
		"add": {args: "domain add DOMAIN", help: "Add a local domain.", exec: domainAdd, min: 1, max: 1},
		"ls":  {args: "domain ls", help: "List the local domains.", exec: domainList, max: 0},
		"rm":  {args: "domain rm DOMAIN", help: "Remove a local domain that has no users or aliases left.", exec: domainRemove, min: 1, max: 1},
	},
	"user": {
		"add": {args: "user add ADDRESS", help: "Add a user; the password is read from the terminal, or with --password-stdin from stdin. It needs auth.min_password_length characters (10 by default) and may not be the address, its part before @ or one of the most common passwords.",
			setup: func(fs *flag.FlagSet) {
				fs.Bool("password-stdin", false, "read the password from the first line of stdin")
				fs.String("alternate", "", "alternate `address` for password recovery")
				fs.String("quota", "", "mailbox quota, such as 2GiB; 0 for none (default: store.default_quota)")
				fs.Bool("admin", false, "give the user the admin role (for the web admin pages, which are not built yet)")
			},
			exec: userAdd, min: 1, max: 1},
		"ls": {args: "user ls", help: "List the users, with their usage, quota, alternate address and state (admin, disabled).",
			setup: func(fs *flag.FlagSet) { fs.String("domain", "", "only users of this `domain`") },
			exec:  userList, max: 0},
		"passwd": {args: "user passwd ADDRESS", help: "Set a user's password (from the terminal, or stdin with --password-stdin). The password policy of user add applies.",
			setup: func(fs *flag.FlagSet) {
				fs.Bool("password-stdin", false, "read the password from the first line of stdin")
			},
			exec: userPasswd, min: 1, max: 1},
		"rm": {args: "user rm ADDRESS", help: "Remove a user with all their mail. Asks first on a terminal; elsewhere, such as in a script, give --yes.",
			setup: func(fs *flag.FlagSet) {
				yes := new(bool)
				fs.BoolVar(yes, "yes", false, "remove without asking")
				fs.BoolVar(yes, "y", false, "short for --yes")
			},
			exec: userRemove, min: 1, max: 1},
		"set-alternate": {args: "user set-alternate ADDRESS ALTERNATE", help: "Set the alternate address for password recovery (\"\" clears it); it is stored, recovery itself is not built yet.", exec: userSetAlternate, min: 2, max: 2},
		"set-quota":     {args: "user set-quota ADDRESS SIZE", help: "Set a user's quota, such as 2GiB (0 for none).", exec: userSetQuota, min: 2, max: 2},
		"set-admin": {args: "user set-admin ADDRESS [on|off]", help: "Give a user the admin role (on, the default), for the web admin pages (not built yet), or take it away (off, or --off).",
			setup: func(fs *flag.FlagSet) { fs.Bool("off", false, "take the admin role away (as with off)") },
			exec:  userSetAdmin, min: 1, max: 2},
		"disable": {args: "user disable ADDRESS", help: "Refuse a user's logins (SMTP AUTH, IMAP, POP3) with the reply a wrong password gets; mail to them is still delivered.\n'user enable' lets them log in again.", exec: userDisable, min: 1, max: 1},
		"enable":  {args: "user enable ADDRESS", help: "Let a disabled user log in again.", exec: userEnable, min: 1, max: 1},
	},
	"alias": {
		"add": {args: "alias add ADDRESS TARGET...", help: "Make ADDRESS deliver to the targets (local or remote). @domain is the domain's catch-all.\nAdding to an existing alias adds targets.", exec: aliasAdd, min: 2, max: -1},
		"ls":  {args: "alias ls", help: "List the aliases.", exec: aliasList, max: 0},
		"rm":  {args: "alias rm ADDRESS [TARGET...]", help: "Remove an alias, or only some of its targets.", exec: aliasRemove, min: 1, max: -1},
	},
	"mailbox": {
		"ls":   {args: "mailbox ls USER", help: "List a user's folders with message counts.", exec: mailboxList, min: 1, max: 1},
		"msgs": {args: "mailbox msgs USER [FOLDER]", help: "List the messages in a folder (INBOX by default).", exec: mailboxMessages, min: 1, max: 2},
	},
	"quarantine": {
		"ls": {args: "quarantine ls", help: "List the messages a filter put in quarantine.",
			exec: func(c *ctx) error {
				return listMessages(c, admin.QueueListParams{Status: string(queue.StatusQuarantine)})
			}, max: 0},
		"show":    {args: "quarantine show ID", help: "Show a quarantined message: envelope, the filters' trace, header.", exec: queueShow, min: 1, max: 1},
		"release": {args: "quarantine release ID", help: "Deliver a quarantined message (without filtering it again).", exec: queueOp("queue.release", "released"), min: 1, max: 1},
		"rm":      {args: "quarantine rm ID", help: "Delete a quarantined message.", exec: queueOp("queue.rm", "removed"), min: 1, max: 1},
	},
	"spam": {
		"train": {args: "spam train --spam DIR --ham DIR", help: "Teach the learning filters (the spam plugin) with example messages: one file per message.",
			setup: func(fs *flag.FlagSet) {
				fs.String("spam", "", "a `directory` of spam messages")
				fs.String("ham", "", "a `directory` of good messages")
				fs.String("pipeline", "inbound", "the `pipeline` whose stages learn")
				fs.String("stage", "", "only this `stage` (default: every stage that learns)")
			},
			exec: spamTrain, max: 0},
	},
	"pipeline": {
		"test": {args: "pipeline test FILE.eml", help: "Run a message through the filter stages without queueing it, and show what each stage decided.",
			setup: func(fs *flag.FlagSet) {
				fs.String("pipeline", "inbound", "inbound or outbound")
				fs.String("from", "", "the MAIL FROM `address` (default <>)")
				fs.Var(&stringList{}, "to", "a RCPT TO `address` (repeat for more)")
				fs.String("ip", "127.0.0.1", "the client's IP `address`")
				fs.String("helo", "localhost", "the client's HELO `name`")
				fs.String("user", "", "an authenticated `user` (for outbound)")
			},
			exec: pipelineTest, min: 1, max: 1},
	},
	"dkim": {
		"keygen": {args: "dkim keygen DOMAIN SELECTOR", help: "Make a DKIM signing key; print its DNS record and the outbound stage that signs with it.\nThe key goes to data_dir/dkim/DOMAIN.SELECTOR.key (or into --dir), mode 0600; an existing key is kept\nunless --force. Needs no running server.",
			setup: func(fs *flag.FlagSet) {
				fs.String("algorithm", "rsa", "key `type`: rsa (2048 bits) or ed25519")
				fs.String("dir", "", "write the key into this `directory` (default: data_dir/dkim)")
				fs.Bool("force", false, "replace an existing key for DOMAIN and SELECTOR")
			},
			exec: dkimKeygen, min: 2, max: 2},
	},
	"queue": {
		"ls": {args: "queue ls", help: "List the queued messages (--status quarantine for the quarantine).",
			setup: func(fs *flag.FlagSet) {
				fs.String("status", "", "only messages in this `state`: active, hold or quarantine")
				fs.String("route", "", "only messages waiting for `route`: local or remote")
				fs.String("domain", "", "only messages with a recipient in this `domain`")
				fs.String("older", "", "only messages received at least this `long` ago, such as 1h")
			},
			exec: queueList, max: 0},
		"show":    {args: "queue show ID", help: "Show a queued message: envelope, recipients with their state, and header.", exec: queueShow, min: 1, max: 1},
		"rm":      {args: "queue rm ID", help: "Delete a queued message without delivering it.", exec: queueOp("queue.rm", "removed"), min: 1, max: 1},
		"hold":    {args: "queue hold ID", help: "Put a message on hold: it is kept but not delivered.", exec: queueOp("queue.hold", "held"), min: 1, max: 1},
		"release": {args: "queue release ID", help: "Take a message off hold; it is delivered now.", exec: queueOp("queue.release", "released"), min: 1, max: 1},
		"flush": {args: "queue flush [ID | --domain DOMAIN]", help: "Retry now, without waiting for the next scheduled attempt: one message, the messages for a domain, or all.",
			setup: func(fs *flag.FlagSet) {
				fs.String("domain", "", "retry the messages with a recipient in this `domain`")
			},
			exec: queueFlush, max: 1},
		"bounce": {args: "queue bounce ID", help: "Give up on a message: its undelivered recipients fail and the sender gets a bounce (DSN).",
			setup: func(fs *flag.FlagSet) {
				fs.String("reason", "", "the `text` the bounce gives as the reason")
			},
			exec: queueBounce, min: 1, max: 1},
	},
}

func serve(c *ctx) error {
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// The heap is small (tens of MB) and short-lived; collecting it
		// less often saves a good share of the CPU under load. GOGC in
		// the environment still wins.
		debug.SetGCPercent(400)
	}
	log := server.NewLogger(cfg.Log, c.stderr)
	if addr := os.Getenv(pprofEnv); addr != "" {
		if err := startPprof(addr, log); err != nil {
			return err
		}
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config: "+w.Msg, "file", w.File, "line", w.Line, "key", w.Key)
	}
	srv, err := server.Start(cfg, log)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var s os.Signal
	for s = range sig {
		if s == syscall.SIGHUP {
			// Reload the filter pipelines; a bad config is refused and
			// the running one stays.
			newCfg, err := c.loadConfig()
			if err == nil {
				err = srv.Reload(newCfg)
			}
			if err != nil {
				log.Error("reload refused; the running configuration stays", "err", err)
			}
			continue
		}
		break
	}
	signal.Reset()
	log.Info("stopping on a signal", "signal", signalName(s))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.SMTP.ShutdownGrace.D()+30*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// signalName names the signals serve stops on as people write them.
func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

func configCheck(c *ctx) error {
	cfg, err := config.Load(c.configPath)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(c.stdout, "warning:", w)
	}
	// What 'serve' refuses to start with, as far as this machine tells.
	problems, err := server.PermissionProblems(cfg)
	if err != nil {
		fmt.Fprintln(c.stdout, "warning:", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: sluice serve would refuse to start: files it trusts can be changed by users other than root and run_as:\n%s", c.configPath, strings.Join(problems, "\n"))
	}
	fmt.Fprintf(c.stdout, "%s: OK (hostname %s, data in %s)\n", c.configPath, cfg.Hostname, cfg.DataDir)
	return nil
}

// configDefaults prints the core config reference, or with --plugin the
// reference the plugin program prints when run with
// sdk.ConfigReferenceFlag: each plugin declares its own keys.
func configDefaults(c *ctx) error {
	name := c.str("plugin")
	if name == "" {
		fmt.Fprint(c.stdout, config.Reference())
		return nil
	}
	// The config says where the plugins are; without one, they are
	// beside this program.
	cfg, err := config.Load(c.configPath)
	if err != nil {
		if c.flagSet("c") || c.flagSet("config") || !errors.Is(err, os.ErrNotExist) {
			return err
		}
		cfg = config.Default()
	}
	path := pluginset.PluginPath(cfg, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("plugin %s: no such program %s (plugins.dir is %s; 'make build' puts the shipped plugins there)", name, path, pluginset.PluginDir(cfg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, sdk.ConfigReferenceFlag)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = c.stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("plugin %s (%s): %s", name, path, msg)
	}
	return nil
}

func configExample(c *ctx) error {
	b := configs.Get(c.args[0])
	if b == nil {
		return fmt.Errorf("no example config %q (there are: %s)", c.args[0], strings.Join(configs.Names(), ", "))
	}
	_, err := c.stdout.Write(b)
	return err
}

func status(c *ctx) error {
	var st admin.Status
	if err := c.call("status", nil, &st); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(st)
	}
	if st.Running {
		fmt.Fprintf(c.stdout, "running (pid %d, since %s)\n", st.PID, st.Started.Format(time.RFC3339))
	} else {
		fmt.Fprintln(c.stdout, "not running")
	}
	fmt.Fprintf(c.stdout, "queue: %d messages, %d on hold, %d in quarantine\n", st.Queue, st.QueueHold, st.Quarantine)
	if len(st.Plugins) > 0 {
		fmt.Fprintln(c.stdout, "plugins:")
		var rows [][]string
		for _, p := range st.Plugins {
			rows = append(rows, []string{"  " + p.Stage, p.Name + " " + p.Version, p.Hooks, strconv.Itoa(p.PID), strconv.FormatInt(p.Restarts, 10)})
		}
		c.table("  STAGE\tPLUGIN\tHOOKS\tPID\tRESTARTS", rows)
	}
	return nil
}

func verify(c *ctx) error {
	var r admin.VerifyResult
	if err := c.call("verify", nil, &r); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(r)
	}
	fmt.Fprintf(c.stdout, "%d messages, %d files; removed %d files without a message; %d messages had lost their file\n",
		r.Store.Messages, r.Store.Files, len(r.Store.OrphanFiles), len(r.Store.MissingFiles))
	return nil
}

func domainAdd(c *ctx) error {
	if err := c.call("domain.add", admin.DomainParams{Name: c.args[0]}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "added domain %s\n", c.args[0])
	return nil
}

func domainRemove(c *ctx) error {
	if err := c.call("domain.rm", admin.DomainParams{Name: c.args[0]}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "removed domain %s\n", c.args[0])
	return nil
}

func domainList(c *ctx) error {
	var ds []struct {
		Name    string    `json:"name"`
		Created time.Time `json:"created"`
	}
	if err := c.call("domain.ls", nil, &ds); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(ds)
	}
	var rows [][]string
	for _, d := range ds {
		rows = append(rows, []string{d.Name, d.Created.Format(time.DateOnly)})
	}
	c.table("DOMAIN\tADDED", rows)
	return nil
}

func (c *ctx) str(name string) string { return c.fs.Lookup(name).Value.String() }

func (c *ctx) boolFlag(name string) bool { return c.fs.Lookup(name).Value.String() == "true" }

func userAdd(c *ctx) error {
	p := admin.UserAddParams{Address: c.args[0], Alternate: c.str("alternate"), Admin: c.boolFlag("admin")}
	if q := c.str("quota"); q != "" {
		size, err := config.ParseSize(q)
		if err != nil {
			return err
		}
		v := int64(size)
		p.Quota = &v
	}
	// Check the address before asking for a password.
	if !strings.Contains(p.Address, "@") {
		return fmt.Errorf("%q is not an email address", p.Address)
	}
	pw, err := c.readPassword(c.boolFlag("password-stdin"))
	if err != nil {
		return err
	}
	p.Password = pw
	var u admin.UserView
	if err := c.call("user.add", p, &u); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(u)
	}
	if u.Admin {
		fmt.Fprintf(c.stdout, "added %s with the admin role\n", u.Address)
		return nil
	}
	fmt.Fprintf(c.stdout, "added %s\n", u.Address)
	return nil
}

func userPasswd(c *ctx) error {
	pw, err := c.readPassword(c.boolFlag("password-stdin"))
	if err != nil {
		return err
	}
	return c.call("user.passwd", admin.UserParams{Address: c.args[0], Password: pw}, nil)
}

// userRemove removes a user and their mail, after a yes on the terminal
// or with --yes, and says how much mail went.
func userRemove(c *ctx) error {
	addr := c.args[0]
	var mbs []admin.MailboxView
	if err := c.call("mailbox.ls", admin.MailboxParams{User: addr}, &mbs); err != nil {
		return err
	}
	var msgs, size int64
	for _, mb := range mbs {
		msgs += int64(mb.Messages)
		size += mb.Size
	}
	sizeText := humanSize(size)
	if size < 1<<10 {
		sizeText = plural(size, "byte")
	}
	mail := fmt.Sprintf("%s, %s, in %s", plural(msgs, "message"), sizeText, plural(int64(len(mbs)), "folder"))
	if !c.boolFlag("yes") {
		if err := c.confirm(fmt.Sprintf("Remove %s and all their mail (%s)?", addr, mail)); err != nil {
			return fmt.Errorf("user rm %s deletes all their mail (%s): %w", addr, mail, err)
		}
	}
	if err := c.call("user.rm", admin.UserParams{Address: addr}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "removed %s and their mail (%s)\n", addr, mail)
	return nil
}

// plural says n things, "1 message" or "2 messages".
func plural(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func userSetAlternate(c *ctx) error {
	return c.call("user.set-alternate", admin.UserParams{Address: c.args[0], Alternate: c.args[1]}, nil)
}

func userSetQuota(c *ctx) error {
	size, err := config.ParseSize(c.args[1])
	if err != nil {
		return err
	}
	return c.call("user.set-quota", admin.UserParams{Address: c.args[0], Quota: int64(size)}, nil)
}

// userSetAdmin gives or takes away the admin role: on unless the second
// argument is off or --off is given.
func userSetAdmin(c *ctx) error {
	on := !c.boolFlag("off")
	if len(c.args) == 2 {
		switch strings.ToLower(c.args[1]) {
		case "on":
			if !on {
				return errors.New("user set-admin: on and --off contradict each other")
			}
		case "off":
			on = false
		default:
			return fmt.Errorf("user set-admin: %q is neither on nor off", c.args[1])
		}
	}
	if err := c.call("user.set-admin", admin.UserParams{Address: c.args[0], Admin: &on}, nil); err != nil {
		return err
	}
	if on {
		fmt.Fprintf(c.stdout, "%s: admin role on\n", c.args[0])
	} else {
		fmt.Fprintf(c.stdout, "%s: admin role off\n", c.args[0])
	}
	return nil
}

func userDisable(c *ctx) error {
	if err := c.call("user.disable", admin.UserParams{Address: c.args[0]}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "disabled %s: logins are refused; mail is still delivered\n", c.args[0])
	return nil
}

func userEnable(c *ctx) error {
	if err := c.call("user.enable", admin.UserParams{Address: c.args[0]}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "enabled %s: logins are allowed again\n", c.args[0])
	return nil
}

// userState is the STATE column of user ls.
func userState(u admin.UserView) string {
	var s []string
	if u.Admin {
		s = append(s, "admin")
	}
	if u.Disabled {
		s = append(s, "disabled")
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func userList(c *ctx) error {
	var us []admin.UserView
	if err := c.call("user.ls", admin.UserListParams{Domain: c.str("domain")}, &us); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(us)
	}
	var rows [][]string
	for _, u := range us {
		quota := "none"
		if u.Quota > 0 {
			quota = config.Size(u.Quota).String()
		}
		rows = append(rows, []string{u.Address, humanSize(u.Used), quota, u.Alternate, userState(u)})
	}
	c.table("USER\tUSED\tQUOTA\tALTERNATE\tSTATE", rows)
	return nil
}

func aliasAdd(c *ctx) error {
	if err := c.call("alias.add", admin.AliasParams{Address: c.args[0], Targets: c.args[1:]}, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "alias %s: added %s\n", c.args[0], strings.Join(c.args[1:], ", "))
	return nil
}

func aliasRemove(c *ctx) error {
	if err := c.call("alias.rm", admin.AliasParams{Address: c.args[0], Targets: c.args[1:]}, nil); err != nil {
		return err
	}
	if len(c.args) == 1 {
		fmt.Fprintf(c.stdout, "removed alias %s\n", c.args[0])
	} else {
		fmt.Fprintf(c.stdout, "alias %s: removed %s\n", c.args[0], strings.Join(c.args[1:], ", "))
	}
	return nil
}

func aliasList(c *ctx) error {
	var as []struct {
		Address string   `json:"address"`
		Targets []string `json:"targets"`
	}
	if err := c.call("alias.ls", nil, &as); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(as)
	}
	var rows [][]string
	for _, a := range as {
		rows = append(rows, []string{a.Address, strings.Join(a.Targets, ", ")})
	}
	c.table("ALIAS\tTARGETS", rows)
	return nil
}

func mailboxList(c *ctx) error {
	var mbs []admin.MailboxView
	if err := c.call("mailbox.ls", admin.MailboxParams{User: c.args[0]}, &mbs); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(mbs)
	}
	var rows [][]string
	for _, mb := range mbs {
		rows = append(rows, []string{mb.Name, strconv.Itoa(int(mb.Messages)), strconv.Itoa(int(mb.Unseen)), humanSize(mb.Size)})
	}
	c.table("FOLDER\tMESSAGES\tUNSEEN\tSIZE", rows)
	return nil
}

func mailboxMessages(c *ctx) error {
	p := admin.MailboxParams{User: c.args[0]}
	if len(c.args) > 1 {
		p.Folder = c.args[1]
	}
	var ms []admin.MessageView
	if err := c.call("mailbox.msgs", p, &ms); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(ms)
	}
	var rows [][]string
	for _, m := range ms {
		rows = append(rows, []string{strconv.FormatUint(uint64(m.UID), 10), m.Date.Local().Format("2006-01-02 15:04"), humanSize(m.Size), clip(m.From, 30), clip(m.Subject, 50), strings.Join(m.Flags, " ")})
	}
	c.table("UID\tDATE\tSIZE\tFROM\tSUBJECT\tFLAGS", rows)
	return nil
}

func queueList(c *ctx) error {
	p := admin.QueueListParams{Status: c.str("status"), Route: c.str("route"), Domain: c.str("domain")}
	if o := c.str("older"); o != "" {
		d, err := config.ParseDuration(o)
		if err != nil {
			return err
		}
		p.MinAge = d.D().String()
	}
	return listMessages(c, p)
}

func listMessages(c *ctx, p admin.QueueListParams) error {
	var ms []*queue.Message
	if err := c.call("queue.ls", p, &ms); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(ms)
	}
	var rows [][]string
	for _, m := range ms {
		pending := 0
		for _, r := range m.Rcpts {
			if !r.Final() {
				pending++
			}
		}
		from := m.From
		if from == "" {
			from = "<>"
		}
		rows = append(rows, []string{m.ID, m.Received.Local().Format("2006-01-02 15:04:05"), humanSize(m.Size), string(m.Status), clip(from, 40), fmt.Sprintf("%d/%d", pending, len(m.Rcpts))})
	}
	c.table("ID\tRECEIVED\tSIZE\tSTATUS\tFROM\tPENDING", rows)
	return nil
}

func queueShow(c *ctx) error {
	var m admin.QueueMessageView
	if err := c.call("queue.show", admin.QueueParams{ID: c.args[0]}, &m); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(m)
	}
	from := m.From
	if from == "" {
		from = "<>"
	}
	fmt.Fprintf(c.stdout, "id:        %s\nreceived:  %s\nstatus:    %s %s\nsize:      %d\nfrom:      %s\nclient:    [%s] helo=%s listener=%s tls=%q user=%q\n",
		m.ID, m.Received.Format(time.RFC3339), m.Status, m.HoldReason, m.Size, from, m.Client.IP, m.Client.HELO, m.Client.Listener, m.Client.TLS, m.Client.AuthUser)
	fmt.Fprintln(c.stdout, "recipients:")
	var rows [][]string
	for _, r := range m.Rcpts {
		next := ""
		if !r.NextAttempt.IsZero() {
			next = r.NextAttempt.Local().Format("15:04:05")
		}
		rows = append(rows, []string{"  " + r.Addr, r.Orig, string(r.Route), string(r.State), strconv.Itoa(r.Attempts), next, r.LastError})
	}
	c.table("  ADDRESS\tRCPT TO\tROUTE\tSTATE\tTRIES\tNEXT\tLAST ERROR", rows)
	var hist [][]string
	for _, r := range m.Rcpts {
		for _, a := range r.History {
			hist = append(hist, []string{"  " + r.Addr, a.Time.Local().Format("2006-01-02 15:04:05"), a.Host, a.Result})
		}
	}
	if len(hist) > 0 {
		fmt.Fprintln(c.stdout, "attempts:")
		c.table("  ADDRESS\tTIME\tSERVER\tRESULT", hist)
	}
	if len(m.Trace) > 0 {
		fmt.Fprintf(c.stdout, "filters (%s pipeline, score %.2f):\n", m.Pipeline, m.Score)
		printTrace(c, m.Trace)
	}
	fmt.Fprintf(c.stdout, "header:\n%s", m.Header)
	return nil
}

// printTrace prints the filter stages' results.
func printTrace(c *ctx, trace []trace.StageResult) {
	var rows [][]string
	for _, r := range trace {
		var syms []string
		for _, s := range r.Symbols {
			syms = append(syms, fmt.Sprintf("%s(%.1f)", s.Name, s.Score))
		}
		why := r.Reason
		if r.Error != "" {
			why = "failed: " + r.Error
		}
		rows = append(rows, []string{"  " + r.Stage, string(r.Hook), r.Action.String(), fmt.Sprintf("%.2f", r.Score), fmt.Sprintf("%.1f", r.Ms), clip(strings.Join(syms, " "), 60), clip(why, 60)})
	}
	c.table("  STAGE\tHOOK\tACTION\tSCORE\tMS\tSYMBOLS\tREASON", rows)
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// connectPipelines is connect for the commands that need the filter
// pipelines: the running server's, or, when none runs, plugins started for
// the command.
func (c *ctx) connectPipelines() (admin.Caller, func(), error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if cl, err := admin.Dial(context.Background(), server.SocketPath(cfg)); err == nil {
		return cl, func() {}, nil
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	set, err := pluginset.Build(context.Background(), cfg, log, pluginset.Options{})
	if err != nil {
		return nil, nil, err
	}
	h := pipeline.NewHolder(set)
	svc := &admin.Service{Pipelines: h, Hostname: cfg.Hostname}
	closeFn := func() { h.Close(5 * time.Second) }
	// The store, when there is one, supplies a --user's addresses.
	if _, err := os.Stat(cfg.DataDir); err == nil {
		if data, err := server.OpenData(cfg, log); err == nil {
			svc.Store = data.Store
			closeFn = func() { h.Close(5 * time.Second); data.Close() }
		}
	}
	return svc, closeFn, nil
}

func spamTrain(c *ctx) error {
	if c.str("spam") == "" && c.str("ham") == "" {
		return errors.New("give --spam DIR, --ham DIR or both")
	}
	caller, closeFn, err := c.connectPipelines()
	if err != nil {
		return err
	}
	defer closeFn()
	for _, kind := range []struct {
		dir  string
		spam bool
	}{{c.str("spam"), true}, {c.str("ham"), false}} {
		if kind.dir == "" {
			continue
		}
		paths, err := messageFiles(kind.dir)
		if err != nil {
			return err
		}
		learned, failed := 0, 0
		for start := 0; start < len(paths); start += 100 {
			batch := paths[start:min(start+100, len(paths))]
			var res admin.LearnResult
			p := admin.LearnParams{Paths: batch, Spam: kind.spam, Pipeline: c.str("pipeline"), Stage: c.str("stage")}
			if err := caller.Call(context.Background(), "spam.learn", p, &res); err != nil {
				return err
			}
			learned += res.Learned
			failed += len(res.Failed)
			for _, f := range res.Failed {
				fmt.Fprintln(c.stderr, "sluice: not learned:", f)
			}
		}
		what := map[bool]string{true: "spam", false: "ham"}[kind.spam]
		fmt.Fprintf(c.stdout, "%s: learned %d messages from %s", what, learned, kind.dir)
		if failed > 0 {
			fmt.Fprintf(c.stdout, " (%d failed)", failed)
		}
		fmt.Fprintln(c.stdout)
	}
	return nil
}

// messageFiles lists the regular files of a directory, as absolute paths
// (the running server reads them).
func messageFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			p, err := filepath.Abs(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no message files in %s", dir)
	}
	return out, nil
}

func pipelineTest(c *ctx) error {
	path, err := filepath.Abs(c.args[0])
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return err
	}
	caller, closeFn, err := c.connectPipelines()
	if err != nil {
		return err
	}
	defer closeFn()
	p := admin.PipelineTestParams{Path: path, Pipeline: c.str("pipeline"), From: c.str("from"), IP: c.str("ip"), HELO: c.str("helo"), User: c.str("user")}
	p.To = *c.fs.Lookup("to").Value.(*stringList)
	var res admin.PipelineTestResult
	if err := caller.Call(context.Background(), "pipeline.test", p, &res); err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(res)
	}
	if len(res.Stages) == 0 {
		fmt.Fprintf(c.stdout, "the %s pipeline has no stages\n", p.Pipeline)
	} else {
		printTrace(c, res.Stages)
	}
	o := res.Outcome
	fmt.Fprintf(c.stdout, "\noutcome: %s (score %.2f)", o.Action, o.Score)
	if o.Stage != "" {
		fmt.Fprintf(c.stdout, " by %s", o.Stage)
	}
	if o.Code != 0 {
		fmt.Fprintf(c.stdout, ": %d %s", o.Code, o.Text)
	}
	if o.Reason != "" {
		fmt.Fprintf(c.stdout, " (%s)", o.Reason)
	}
	fmt.Fprintln(c.stdout)
	if o.Header != "" {
		fmt.Fprintf(c.stdout, "header fields added:\n%s", o.Header)
	}
	return nil
}

func queueFlush(c *ctx) error {
	p := admin.QueueFlushParams{Domain: c.str("domain")}
	if len(c.args) == 1 {
		p.ID = c.args[0]
	}
	var res admin.CountResult
	if err := c.call("queue.flush", p, &res); err != nil {
		return err
	}
	switch {
	case p.ID != "":
		fmt.Fprintf(c.stdout, "flushed %s\n", p.ID)
	default:
		fmt.Fprintf(c.stdout, "flushed %s\n", plural(int64(res.Count), "message"))
	}
	return nil
}

func queueBounce(c *ctx) error {
	var res admin.CountResult
	if err := c.call("queue.bounce", admin.QueueParams{ID: c.args[0], Reason: c.str("reason")}, &res); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "bounced %s (%d recipients)\n", c.args[0], res.Count)
	return nil
}

func queueOp(method, done string) func(c *ctx) error {
	return func(c *ctx) error {
		if err := c.call(method, admin.QueueParams{ID: c.args[0]}, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s %s\n", done, c.args[0])
		return nil
	}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10)
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
