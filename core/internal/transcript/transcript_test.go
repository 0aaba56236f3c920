package transcript

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/tlscert"
)

// lineServer is a toy SMTP-like server on loopback: "220 hi" on connect;
// EHLO gets a two-line reply, STARTTLS a 220 and TLS, DATA three lines
// of which one starts with a dot, QUIT a 221 and the end, SILENT nothing,
// anything else "500 what".
type lineServer struct {
	settings map[string]string
	tls      *tls.Config
	t        *testing.T
}

func newLineServer(t *testing.T) *lineServer {
	certPEM, keyPEM, err := tlscert.SelfSigned("mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &lineServer{settings: map[string]string{}, tls: &tls.Config{Certificates: []tls.Certificate{cert}}, t: t}
}

func (s *lineServer) Set(key, value string) error {
	if key != "greeting" {
		return fmt.Errorf("unknown setting %q", key)
	}
	s.settings[key] = value
	return nil
}

func (s *lineServer) Dial() (net.Conn, *tls.Config, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	s.t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer func() { c.Close() }()
		greeting := "220 hi"
		if g, ok := s.settings["greeting"]; ok {
			greeting = g
		}
		fmt.Fprintf(c, "%s\r\n", greeting)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.TrimSpace(line) {
			case "EHLO":
				fmt.Fprint(c, "250-first\r\n250 last\r\n")
			case "STARTTLS":
				fmt.Fprint(c, "220 go\r\n")
				tc := tls.Server(c, s.tls)
				if tc.Handshake() != nil {
					return
				}
				c, r = tc, bufio.NewReader(tc)
			case "DATA":
				fmt.Fprint(c, "354 lines\r\n.dot\r\n\r\n.\r\n")
			case "QUIT":
				fmt.Fprint(c, "221 bye\r\n")
				return
			case "SILENT":
			default:
				fmt.Fprint(c, "500 what\r\n")
			}
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	return c, &tls.Config{InsecureSkipVerify: true}, err
}

var smtpLike = Options{
	Continued: func(l string) bool { return len(l) >= 4 && l[3] == '-' },
	// Only the cases that expect a silent server wait this long.
	Timeout: 500 * time.Millisecond,
}

// TestRun runs testdata/good.txt, which has every directive, against the
// toy server.
func TestRun(t *testing.T) {
	Run(t, "testdata/*.txt", func(t *testing.T) Server { return newLineServer(t) }, smtpLike)
}

// TestPlayFails checks that an expectation the server does not meet fails
// the transcript, naming the line.
func TestPlayFails(t *testing.T) {
	for _, tc := range []struct{ name, script, want string }{
		{"wrong reply", "S: 220\nC: EHLO\nS: 251\n", "x.txt:3: got \"250 last\""},
		{"multi-line reply is one", "S: 220\nC: EHLO\nS: 250\nS: 250\n", "x.txt:4: got \"timeout\""},
		{"wrong exact line", "S: 220\nC: DATA\nS= 354 lines\nS= dot\n", "x.txt:4: got \".dot\""},
		{"no such line", "S: 220\nC: QUIT\nS* 250\n", "x.txt:3: closed before a line starting with \"250\""},
		{"open, not closed", "S: 220\nC: EHLO\nS: closed\n", "x.txt:3: the connection is still open"},
		{"closed, not a reply", "S: 220\nC: QUIT\nS: 221\nS: 250\n", "x.txt:4: got \"closed\""},
		{"forbidden text", "S: 220\nNOT: 250-fir\nC: EHLO\nS: 250\n", "the server sent \"250-fir\""},
		{"unknown setting", "colour: blue\nS: 220\n", "x.txt:1: unknown setting \"colour\""},
		{"setting after the start", "S: 220\ngreeting: 220 x\n", "x.txt:2: unknown directive"},
		{"bad quoting", "R: \"EHLO\n", "x.txt:1: bad quoted string"},
		{"unknown directive", "S: 220\nSEND EHLO\n", "x.txt:2: unknown directive \"SEND EHLO\""},
		{"TLS not agreed", "S: 220\nC: EHLO\nTLS\n", "x.txt:3: TLS handshake"},
		{"no session", "# nothing\n", "x.txt: no session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Play("x.txt", []byte(tc.script), newLineServer(t), smtpLike)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Play = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
