package pop3d

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/internal/transcript"
)

// TestTranscripts walks testdata/transcripts: each file is one session
// against a fresh server (see newServer), in the format of
// core/internal/transcript. The settings:
//
//	config: plaintext_loopback    allow USER/PASS from loopback without TLS
//	mail: USER "quoted message"   deliver a message into USER's INBOX
//	listener: pop3 | pop3s        (default pop3)
//
// Replies are matched on +OK/-ERR and their response code: the texts are
// free to change. Data lines of multi-line replies are matched exactly
// with S= (dot-stuffing included).
func TestTranscripts(t *testing.T) {
	transcript.Run(t, "testdata/transcripts/*.txt", func(t *testing.T) transcript.Server {
		return &transcriptServer{t: t, kind: KindPOP3}
	}, transcript.Options{})
}

// transcriptServer is a transcript's server, started at the first line of
// the session.
type transcriptServer struct {
	t     *testing.T
	opts  []func(*config.Config)
	mails [][2]string // user, message
	kind  Kind
}

func (s *transcriptServer) Set(key, value string) error {
	switch key {
	case "config":
		if value != "plaintext_loopback" {
			return fmt.Errorf("unknown config %q", value)
		}
		s.opts = append(s.opts, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	case "mail":
		user, quoted, _ := strings.Cut(value, " ")
		msg, err := strconv.Unquote(quoted)
		if err != nil {
			return fmt.Errorf("bad quoted message: %v", err)
		}
		s.mails = append(s.mails, [2]string{user, msg})
	case "listener":
		s.kind = Kind(value)
	default:
		return fmt.Errorf("unknown setting %q", key)
	}
	return nil
}

func (s *transcriptServer) Dial() (net.Conn, *tls.Config, error) {
	e := newServer(s.t, s.opts...)
	for _, m := range s.mails {
		e.deliver(s.t, m[0], m[1])
	}
	return e.dial(s.t, s.kind).conn, e.tls, nil
}
