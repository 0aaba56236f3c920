package server

import (
	"fmt"
	"net/netip"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/imapd"
	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/core/pop3d"
	"github.com/sluice-mail/sluice/core/smtpd"
	"github.com/sluice-mail/sluice/core/webmail"
)

// The listener packages take options of their own rather than the
// config; this file is the one place where the config is turned into
// them. The dependencies (store, queue, TLS, logger and the others) are
// added by Start.

// smtpOptions is what smtpd needs from the config.
func smtpOptions(cfg *config.Config) (smtpd.Options, error) {
	c := cfg.SMTP
	var relayNets []netip.Prefix
	for _, n := range c.RelayNetworks {
		p, err := config.ParsePrefix(n)
		if err != nil {
			return smtpd.Options{}, fmt.Errorf("server: smtp.relay_networks: %w", err)
		}
		relayNets = append(relayNets, p)
	}
	return smtpd.Options{
		Hostname: cfg.Hostname,
		Listen: map[smtpd.Kind][]string{
			smtpd.KindMX:          c.MX.Listen,
			smtpd.KindSubmission:  c.Submission.Listen,
			smtpd.KindSubmissions: c.Submissions.Listen,
		},
		RelayNetworks: relayNets,
		Limits: smtpd.Limits{
			MaxMessageSize:      int64(c.MaxMessageSize),
			MaxRecipients:       c.MaxRecipients,
			MaxLineLength:       c.MaxLineLength,
			MaxHops:             c.MaxHops,
			Shape:               shapeLimits(c),
			MaxErrors:           c.MaxErrors,
			ReadTimeout:         c.ReadTimeout.D(),
			WriteTimeout:        c.WriteTimeout.D(),
			MinDataRate:         int64(c.MinDataRate),
			MaxSessionTime:      c.MaxSessionTime.D(),
			TarpitAfter:         c.TarpitAfter,
			TarpitDelay:         c.TarpitDelay.D(),
			MaxConnections:      c.MaxConnections,
			MaxConnectionsPerIP: c.MaxConnectionsPerIP,
		},
	}, nil
}

// shapeLimits are the header and MIME limits of the smtp section.
func shapeLimits(c config.SMTP) mimelimit.Limits {
	return mimelimit.Limits{
		HeaderBytes:  int64(c.MaxHeaderSize),
		HeaderFields: c.MaxHeaderFields,
		FieldLength:  int(c.MaxHeaderFieldSize),
		MaxDepth:     c.MaxMIMEDepth,
		MaxParts:     c.MaxMIMEParts,
	}
}

// imapOptions is what imapd needs from the config. Stored mail is read
// with the SMTP header and MIME limits, all but the length of one field
// (a mimelimit.View cuts overlong lines itself).
func imapOptions(cfg *config.Config) imapd.Options {
	view := shapeLimits(cfg.SMTP)
	view.FieldLength = 0
	return imapd.Options{
		Listen:              cfg.IMAP.Listen,
		ListenTLS:           cfg.IMAP.ListenTLS,
		MaxConnections:      cfg.IMAP.MaxConnections,
		MaxConnectionsPerIP: cfg.IMAP.MaxConnectionsPerIP,
		PlaintextLoopback:   cfg.Auth.PlaintextLoopback,
		MaxAppendSize:       int64(cfg.SMTP.MaxMessageSize),
		View:                view,
	}
}

// pop3Options is what pop3d needs from the config.
func pop3Options(cfg *config.Config) pop3d.Options {
	return pop3d.Options{
		Hostname:            cfg.Hostname,
		Listen:              cfg.POP3.Listen,
		ListenTLS:           cfg.POP3.ListenTLS,
		MaxConnections:      cfg.POP3.MaxConnections,
		MaxConnectionsPerIP: cfg.POP3.MaxConnectionsPerIP,
		ReadTimeout:         cfg.POP3.ReadTimeout.D(),
		PlaintextLoopback:   cfg.Auth.PlaintextLoopback,
	}
}

// webOptions is what webmail needs from the config.
func webOptions(cfg *config.Config) webmail.Options {
	return webmail.Options{
		Listen:              cfg.Web.Listen,
		IdleTimeout:         cfg.Web.IdleTimeout.D(),
		MaxLifetime:         cfg.Web.MaxLifetime.D(),
		MaxConnections:      cfg.Web.MaxConnections,
		MaxConnectionsPerIP: cfg.Web.MaxConnectionsPerIP,
	}
}
