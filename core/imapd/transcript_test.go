package imapd

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/internal/transcript"
)

// TestTranscripts walks testdata/transcripts: each file is one session
// against a fresh server (see newEnv), in the format of
// core/internal/transcript. The settings:
//
//	config: plaintext_loopback    allows LOGIN without TLS
//	listener: tls                 implicit TLS (default: the STARTTLS port)
//	deliver: N                    N messages for alice's INBOX
//
// Responses are matched on their tag, type and response code: the texts
// are free to change.
func TestTranscripts(t *testing.T) {
	transcript.Run(t, "testdata/transcripts/*.txt", func(t *testing.T) transcript.Server {
		return &transcriptServer{t: t}
	}, transcript.Options{})
}

// transcriptServer is a transcript's server, started at the first line of
// the session.
type transcriptServer struct {
	t          *testing.T
	opts       []func(*config.Config)
	implicit   bool
	deliveries int
}

func (s *transcriptServer) Set(key, value string) error {
	switch {
	case key == "config" && value == "plaintext_loopback":
		s.opts = append(s.opts, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	case key == "listener" && value == "tls":
		s.implicit = true
	case key == "deliver":
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("deliver: %v", err)
		}
		s.deliveries = n
	default:
		return fmt.Errorf("unknown setting %q", key+": "+value)
	}
	return nil
}

func (s *transcriptServer) Dial() (net.Conn, *tls.Config, error) {
	e := newEnv(s.t, s.opts...)
	for n := 0; n < s.deliveries; n++ {
		e.deliver(s.t, alice, "INBOX", simpleMessage("message "+strconv.Itoa(n+1)))
	}
	addr := e.plain
	if s.implicit {
		addr = e.implicit
	}
	return dialRaw(s.t, addr, s.implicit).conn, &tls.Config{InsecureSkipVerify: true}, nil
}
