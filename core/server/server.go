// Package server wires Sluice together: it opens the data directory, starts
// the SMTP, IMAP and POP3 listeners, local delivery and the admin socket, and
// stops them in order. cmd/sluice's serve command is a thin wrapper around it.
//
// Layout of the data directory:
//
//	store/       accounts and mailboxes (store.db, blobs/)
//	queue/       the mail queue (queue.db, spool/)
//	tls/         the generated self-signed certificate, if any
//	admin.sock   the admin socket while the server runs
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/admin"
	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/delivery/local"
	"github.com/sluice-mail/sluice/core/delivery/remote"
	"github.com/sluice-mail/sluice/core/dns"
	"github.com/sluice-mail/sluice/core/imapd"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/pluginhost"
	"github.com/sluice-mail/sluice/core/pluginset"
	"github.com/sluice-mail/sluice/core/pop3d"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/smtpd"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/core/tlscert"
	"github.com/sluice-mail/sluice/core/webmail"
	"github.com/sluice-mail/sluice/sdk"
)

// NewLogger returns the process logger the config asks for, writing to w.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Data is the opened data directory.
type Data struct {
	Store *store.Store
	Queue *queue.Queue
}

// ErrInUse is returned by OpenData when another process holds the data
// directory.
var ErrInUse = errors.New("server: the data directory is in use by another sluice process")

// OpenData opens (creating if needed) the store and the queue in the
// config's data directory, and adds the config's domains to the store if
// they are missing. The queue recovers from a crash as it opens.
func OpenData(cfg *config.Config, log *slog.Logger) (*Data, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	st, err := store.Open(store.Options{
		Dir:                filepath.Join(cfg.DataDir, "store"),
		RecipientDelimiter: cfg.Store.RecipientDelimiter,
		DefaultQuota:       int64(cfg.Store.DefaultQuota),
		Logger:             log,
	})
	if errors.Is(err, store.ErrLocked) {
		return nil, ErrInUse
	}
	if err != nil {
		return nil, err
	}
	q, err := queue.Open(queue.Options{
		Dir:         filepath.Join(cfg.DataDir, "queue"),
		MinFreeDisk: int64(cfg.Queue.MinFreeDisk),
		Logger:      log,
	})
	if err != nil {
		st.Close()
		if errors.Is(err, queue.ErrLocked) {
			return nil, ErrInUse
		}
		return nil, err
	}
	for _, d := range cfg.Domains {
		if err := st.EnsureDomain(d); err != nil {
			q.Close()
			st.Close()
			return nil, err
		}
	}
	return &Data{Store: st, Queue: q}, nil
}

// Close closes the store and the queue.
func (d *Data) Close() error {
	return errors.Join(d.Queue.Close(), d.Store.Close())
}

// SocketPath returns where the admin socket of a data directory lives.
func SocketPath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, admin.SocketName) }

// Server is a running Sluice.
type Server struct {
	cfg  *config.Config
	log  *slog.Logger
	data *Data
	// listeners are the mail listeners, stopped before the queues.
	listeners []listener
	imap      *imapd.Server   // nil when no IMAP listener is configured
	pop3      *pop3d.Server   // nil when no POP3 listener is configured
	web       *webmail.Server // nil when no web listener is configured
	// admin is stopped after the queues: it answers while they drain.
	admin *adminService
	pipes *pipeline.Holder
	// buildOpts start the plugins of a reload as those of the start.
	buildOpts pluginset.Options
	launcher  *pluginhost.Launcher // nil without plugin_user

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start opens the data directory and starts everything. It returns once
// every listener is bound, or with the first error.
func Start(cfg *config.Config, log *slog.Logger) (_ *Server, err error) {
	started := time.Now()
	problems, err := PermissionProblems(cfg)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, permissionError("start", problems)
	}
	runAs, err := lookupRunAs(cfg)
	if err != nil {
		return nil, err
	}
	pluginUser, err := lookupPluginUser(cfg, runAs)
	if err != nil {
		return nil, err
	}
	var buildOpts pluginset.Options
	var launcher *pluginhost.Launcher
	switch {
	case runAs != nil && os.Geteuid() == 0:
		// The plugins start, as the user, before the rest of data_dir is
		// given to it: they need to reach their state directories, and
		// what a command run as root left there must not stop them.
		plugins := filepath.Join(cfg.DataDir, "plugins")
		if err := refuseLinks(cfg.DataDir, plugins); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(plugins, 0o700); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if err := runAs.reachable(cfg.DataDir); err != nil {
			return nil, err
		}
		if err := errors.Join(os.Lchown(cfg.DataDir, runAs.uid, runAs.gid), runAs.own(plugins, stateDirs(plugins, pluginUser))); err != nil {
			return nil, fmt.Errorf("server: giving data_dir to run_as user %s: %w", runAs.name, err)
		}
		buildOpts.Host.Credential = runAs.credential()
		if pluginUser != nil {
			if launcher, err = startLauncher(cfg, runAs, pluginUser, log); err != nil {
				return nil, err
			}
			defer func() {
				if err != nil {
					launcher.Close()
				}
			}()
			buildOpts.Host.Launcher = launcher
		}
	case runAs != nil && os.Geteuid() != runAs.uid:
		return nil, fmt.Errorf("server: run_as is %s, but sluice runs as uid %d: start it as root or as %s", runAs.name, os.Geteuid(), runAs.name)
	case runAs != nil && pluginUser != nil:
		return nil, fmt.Errorf("server: plugin_user is %s, but sluice runs as %s: start it as root, so that it can start the plugins as %s", pluginUser.name, runAs.name, pluginUser.name)
	case runAs != nil:
		runAs = nil // already that user
	case os.Geteuid() == 0:
		log.Warn("running as root: set run_as to an unprivileged user so that the server and its plugins do not keep root")
	}
	data, err := OpenData(cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			data.Close()
		}
	}()
	// Nothing delivers yet, so every message file without a record is
	// left over from a crash.
	if rep, err := data.Store.Verify(0); err != nil {
		return nil, err
	} else if len(rep.OrphanFiles)+len(rep.MissingFiles) > 0 {
		log.Warn("store: repaired at start-up", "orphan_files", len(rep.OrphanFiles), "missing_files", len(rep.MissingFiles))
	}
	tlsConf, err := tlscert.Load(cfg)
	if err != nil {
		return nil, err
	}
	authn := &auth.Authenticator{
		Users: data.Store,
		Throttle: &auth.Throttle{
			MaxPerIP:    cfg.Auth.MaxFailuresPerIP,
			MaxPerUser:  cfg.Auth.MaxFailuresPerUser,
			Window:      cfg.Auth.FailureWindow.D(),
			KnownWindow: cfg.Auth.KnownClientWindow.D(),
		},
	}
	pipes, err := pluginset.Build(context.Background(), cfg, log, buildOpts)
	if err != nil {
		return nil, err
	}
	holder := pipeline.NewHolder(pipes)
	defer func() {
		if err != nil {
			holder.Close(0)
		}
	}()
	bouncer := &dsn.Bouncer{Queue: data.Queue, Store: data.Store, Hostname: cfg.Hostname, MaxReturned: int64(cfg.Remote.MaxReturnedContent), Logger: log}
	deliverer := local.New(local.Options{
		Queue:      data.Queue,
		Store:      data.Store,
		Workers:    cfg.Queue.LocalWorkers,
		RetryAfter: cfg.Queue.RetryAfter.D(),
		HoldAfter:  cfg.Queue.HoldAfter,
		Bouncer:    bouncer,
		Logger:     log,
	})
	relay, err := remote.New(remote.Options{
		Queue:    data.Queue,
		Bouncer:  bouncer,
		DNS:      dns.New(cfg.DNS.Servers, cfg.DNS.Timeout.D()),
		Config:   cfg.Remote,
		Routes:   cfg.Routes,
		Hostname: cfg.Hostname,
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	var immediate smtpd.LocalDeliverer
	if cfg.Queue.Immediate {
		immediate = deliverer
	}
	// The mail listeners: bound in this order, served together, and
	// stopped side by side before the queues (see Shutdown). Another
	// listener is one more entry in this list.
	smtpOpts, err := smtpOptions(cfg)
	if err != nil {
		return nil, err
	}
	smtpOpts.Store, smtpOpts.Queue, smtpOpts.Local, smtpOpts.Pipelines = data.Store, data.Queue, immediate, holder
	smtpOpts.Auth, smtpOpts.TLS, smtpOpts.Relay, smtpOpts.Logger = authn, tlsConf, relay, log
	smtp, err := smtpd.New(smtpOpts)
	if err != nil {
		return nil, err
	}
	listeners := []listener{{svc: smtp, cutOff: "closed connections still receiving messages after the grace period"}}
	var imapSrv *imapd.Server
	if len(cfg.IMAP.Listen)+len(cfg.IMAP.ListenTLS) > 0 {
		opts := imapOptions(cfg)
		opts.Store, opts.Auth, opts.TLS, opts.Learn, opts.Logger = data.Store, authn, tlsConf, spamLearner(holder, log), log
		if imapSrv, err = imapd.New(opts); err != nil {
			return nil, err
		}
		listeners = append(listeners, listener{svc: imapSrv, cutOff: "closed IMAP connections still busy after the grace period"})
	}
	var pop3 *pop3d.Server
	if len(cfg.POP3.Listen)+len(cfg.POP3.ListenTLS) > 0 {
		opts := pop3Options(cfg)
		opts.Store, opts.Auth, opts.TLS, opts.Logger = data.Store, authn, tlsConf, log
		if pop3, err = pop3d.New(opts); err != nil {
			return nil, err
		}
		listeners = append(listeners, listener{svc: pop3, cutOff: "closed POP3 connections still busy after the grace period"})
	}
	var web *webmail.Server
	if len(cfg.Web.Listen) > 0 {
		// The same Authenticator, and so the same throttle, as SMTP AUTH,
		// IMAP and POP3: a password guessed over the web counts there too.
		opts := webOptions(cfg)
		opts.Store, opts.Auth, opts.TLS, opts.Logger = data.Store, authn, tlsConf, log
		if web, err = webmail.New(opts); err != nil {
			return nil, err
		}
		listeners = append(listeners, listener{svc: web, cutOff: "closed web connections still busy after the grace period"})
	}
	if err := listenAll(listeners); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			shutdownAll(context.Background(), listeners, nil)
		}
	}()
	adm := &adminService{path: SocketPath(cfg), svc: &admin.Service{Store: data.Store, Queue: data.Queue, Pipelines: holder, Hostname: cfg.Hostname, Started: started, Bouncer: bouncer,
		PasswordPolicy: auth.PasswordPolicy{MinLength: cfg.Auth.MinPasswordLength}, Log: log}, log: log}
	if err := adm.Listen(); err != nil {
		return nil, err
	}
	if runAs != nil {
		// Everything that needs root is done: the ports are bound, the
		// certificate read, the databases open, the plugins started.
		if err := runAs.own(cfg.DataDir, stateDirs(filepath.Join(cfg.DataDir, "plugins"), pluginUser)); err != nil {
			adm.Shutdown(context.Background())
			return nil, fmt.Errorf("server: giving data_dir to run_as user %s: %w", runAs.name, err)
		}
		if err := runAs.drop(); err != nil {
			adm.Shutdown(context.Background())
			return nil, err
		}
		log.Info("switched to the run_as user", "user", runAs.name, "uid", runAs.uid, "gid", runAs.gid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, data: data, listeners: listeners, imap: imapSrv, pop3: pop3, web: web, admin: adm, pipes: holder, buildOpts: buildOpts, launcher: launcher, cancel: cancel}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); deliverer.Run(ctx) }()
	go func() { defer s.wg.Done(); relay.Run(ctx) }()
	adm.Serve()
	for _, l := range listeners {
		l.svc.Serve()
	}
	log.Info("sluice started", "hostname", cfg.Hostname, "data_dir", cfg.DataDir, "tls", tlsConf != nil, "recovered_messages", data.Queue.Recovered().Messages)
	return s, nil
}

// Reload applies a new configuration's filter pipelines without dropping
// a session: plugins whose stage did not change keep running, new ones
// start, and the old ones stop when the checks in flight are done. A
// configuration that does not validate, or a plugin that does not start,
// leaves everything as it was, and so does one whose files others could
// change (see PermissionProblems). Other settings need a restart; Reload
// says which of them changed.
func (s *Server) Reload(cfg *config.Config) error {
	problems, err := PermissionProblems(cfg)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return permissionError("reload", problems)
	}
	if err := pluginset.Reload(context.Background(), s.pipes, cfg, s.log, s.buildOpts, time.Minute); err != nil {
		return err
	}
	for _, c := range changedOutsidePipelines(s.cfg, cfg) {
		s.log.Warn("reload: this setting changed but only takes effect after a restart", "key", c)
	}
	s.log.Info("reloaded the filter pipelines")
	return nil
}

// changedOutsidePipelines lists the top-level config sections that differ
// between a and b, other than the pipelines.
func changedOutsidePipelines(a, b *config.Config) []string {
	var out []string
	check := func(key string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, key)
		}
	}
	check("hostname", a.Hostname, b.Hostname)
	check("data_dir", a.DataDir, b.DataDir)
	check("domains", a.Domains, b.Domains)
	check("run_as", a.RunAs, b.RunAs)
	check("plugin_user", a.PluginUser, b.PluginUser)
	check("log", a.Log, b.Log)
	check("tls", a.TLS, b.TLS)
	check("smtp", a.SMTP, b.SMTP)
	check("imap", a.IMAP, b.IMAP)
	check("pop3", a.POP3, b.POP3)
	check("web", a.Web, b.Web)
	check("queue", a.Queue, b.Queue)
	check("store", a.Store, b.Store)
	check("auth", a.Auth, b.Auth)
	check("dns", a.DNS, b.DNS)
	check("remote", a.Remote, b.Remote)
	check("routes", a.Routes, b.Routes)
	return out
}

// POP3 returns the POP3 server, or nil when no POP3 listener is
// configured.
func (s *Server) POP3() *pop3d.Server { return s.pop3 }

// Web returns the web server, or nil when no web listener is
// configured; for tests that need its addresses.
func (s *Server) Web() *webmail.Server { return s.web }

// IMAP returns the IMAP server, or nil when no IMAP listener is
// configured; for tests that need its addresses.
func (s *Server) IMAP() *imapd.Server { return s.imap }

// spamLearner returns what imapd calls when a user moves a message into or
// out of Junk: it teaches the inbound pipeline's learning stages (the spam
// plugin), as 'sluice spam learn' does. A pipeline without such a stage is
// not an error.
func spamLearner(holder *pipeline.Holder, log *slog.Logger) imapd.LearnFunc {
	return func(ctx context.Context, open func() (io.ReadCloser, error), size int64, spam bool) error {
		set, release := holder.Acquire()
		defer release()
		p := set.Get("inbound")
		if p.Empty() {
			return nil
		}
		r, err := open()
		if err != nil {
			return err
		}
		header, _ := sdk.ParseHeader(bufio.NewReader(r))
		r.Close()
		err = p.Learn(ctx, "", &sdk.Envelope{Pipeline: p.Name}, header, size, pipeline.Opener(open), spam)
		if errors.Is(err, pipeline.ErrNoLearner) {
			log.Debug("imap: no stage of the inbound pipeline learns; message not learnt", "spam", spam)
			return nil
		}
		return err
	}
}

// Shutdown stops accepting mail, lets messages being received finish for
// up to smtp.shutdown_grace, stops local delivery after the messages in
// hand and remote delivery after the transfers in progress (cut off after
// ten seconds: what they had not finished is sent again at the next
// start), and closes the databases. Nothing accepted is lost: what is not
// delivered stays queued for the next start. POP3 sessions waiting for a
// command are closed at once; one sending a message or applying its QUIT
// may finish within the same grace period. Deletions of POP3 sessions
// that did not reach QUIT are not applied. IMAP sessions get BYE at once;
// those still being written to at the end of the grace period are cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.log.Info("shutting down")
	graceCtx, cancel := context.WithTimeout(ctx, s.cfg.SMTP.ShutdownGrace.D())
	defer cancel()
	err := shutdownAll(graceCtx, s.listeners, s.log)
	s.cancel()
	adminCtx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	s.admin.Shutdown(adminCtx)
	s.wg.Wait()
	s.pipes.Close(5 * time.Second)
	if s.launcher != nil {
		s.launcher.Close()
	}
	err = errors.Join(err, s.data.Close())
	s.log.Info("stopped")
	return err
}
