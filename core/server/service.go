package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/sluice-mail/sluice/core/admin"
	"github.com/sluice-mail/sluice/core/imapd"
	"github.com/sluice-mail/sluice/core/pop3d"
	"github.com/sluice-mail/sluice/core/smtpd"
	"github.com/sluice-mail/sluice/core/webmail"
)

// Service is one of the server's listeners: SMTP (all three ports), IMAP,
// POP3, the web interface, the admin socket. Start and Shutdown run each the same way, so
// that another listener is one more entry in Start's list.
//
// Call order: Listen once, then Serve once, then Shutdown once. Shutdown
// may also follow Listen alone, when something else failed to start.
type Service interface {
	// Listen binds every address the service is configured with, so that
	// a port in use (or a listener that cannot work, such as implicit TLS
	// without a certificate) is an error before anything is served. On
	// error nothing stays bound.
	Listen() error
	// Serve serves what Listen bound, in goroutines of its own, and
	// returns at once.
	Serve()
	// Shutdown stops accepting connections at once, lets the sessions in
	// progress finish until ctx is done, then cuts off those left and
	// returns ctx's error. It returns when the service's goroutines have
	// ended.
	Shutdown(ctx context.Context) error
}

var (
	_ Service = (*smtpd.Server)(nil)
	_ Service = (*imapd.Server)(nil)
	_ Service = (*pop3d.Server)(nil)
	_ Service = (*webmail.Server)(nil)
	_ Service = (*adminService)(nil)
)

// listener is one entry of the server's list of mail listeners.
type listener struct {
	svc Service
	// cutOff is the warning logged when the grace period ended with
	// sessions still running.
	cutOff string
}

// listenAll binds every listener, in order; on an error it unbinds those
// it bound.
func listenAll(ls []listener) error {
	for i, l := range ls {
		if err := l.svc.Listen(); err != nil {
			shutdownAll(context.Background(), ls[:i], nil)
			return err
		}
	}
	return nil
}

// shutdownAll shuts the listeners down side by side, all with the same
// deadline, and returns when all are done. A listener cut off by the
// deadline is a warning in the log, not an error.
func shutdownAll(ctx context.Context, ls []listener, log *slog.Logger) error {
	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.svc.Shutdown(ctx)
		}()
	}
	wg.Wait()
	var err error
	for i, l := range ls {
		switch {
		case errors.Is(errs[i], context.DeadlineExceeded):
			if log != nil {
				log.Warn(l.cutOff)
			}
		case errs[i] != nil:
			err = errors.Join(err, errs[i])
		}
	}
	return err
}

// adminService is the admin socket as a Service.
type adminService struct {
	path string
	svc  *admin.Service
	log  *slog.Logger
	srv  *admin.Server
	wg   sync.WaitGroup
}

func (a *adminService) Listen() (err error) {
	a.srv, err = admin.Listen(a.path, a.svc, a.log)
	return err
}

func (a *adminService) Serve() {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.srv.Serve()
	}()
}

// Shutdown stops the socket, waits until ctx is done for calls in
// progress, and removes the socket file.
func (a *adminService) Shutdown(ctx context.Context) error {
	err := a.srv.Close(ctx)
	a.wg.Wait()
	return err
}
