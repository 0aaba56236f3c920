package smtpd

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"

	"github.com/sluice-mail/sluice/core/internal/transcript"
)

// TestTranscripts walks testdata/transcripts: each file is one session
// against a fresh server (see newServer), in the format of
// core/internal/transcript. The one setting:
//
//	listener: mx | submission | submissions   (default mx)
//
// Replies are matched on their code and, when given, enhanced code (S:
// matches the last line of a multi-line reply): the texts are free to
// change.
func TestTranscripts(t *testing.T) {
	transcript.Run(t, "testdata/transcripts/*.txt", func(t *testing.T) transcript.Server {
		return &transcriptServer{t: t, kind: KindMX}
	}, transcript.Options{Continued: func(l string) bool { return len(l) >= 4 && l[3] == '-' }})
}

// transcriptServer is a transcript's server, started at the first line of
// the session.
type transcriptServer struct {
	t    *testing.T
	kind Kind
}

func (s *transcriptServer) Set(key, value string) error {
	if key != "listener" {
		return fmt.Errorf("unknown setting %q", key)
	}
	s.kind = Kind(value)
	return nil
}

func (s *transcriptServer) Dial() (net.Conn, *tls.Config, error) {
	e := newServer(s.t)
	return e.dial(s.t, s.kind).conn, e.tls, nil
}
