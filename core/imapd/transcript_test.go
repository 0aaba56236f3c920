package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
)

// TestTranscripts walks testdata/transcripts. Each file is one session
// against a fresh server (see newEnv), one directive per line:
//
//	# comment
//	config: plaintext_loopback    (before the first line sent; allows LOGIN without TLS)
//	listener: tls                 (before the first line sent; default: the STARTTLS port)
//	deliver: N                    (N messages for alice's INBOX, before connecting)
//	C: text                       send text and CRLF
//	R: "quoted"                   send the Go-quoted bytes as they are
//	S: prefix                     read one line; it must start with prefix
//	S* prefix                     read lines until one starts with prefix
//	S: closed                     the server must close the connection (lines before are skipped)
//	NOT: text                     no line read in the whole session may contain text (checked at the end)
//	TLS                           start TLS (after the OK to STARTTLS)
//
// Responses are matched on their tag, type and response code: the texts
// are free to change.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runTranscript(t, f)
		})
	}
}

func runTranscript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var opts []func(*config.Config)
	implicit, deliveries := false, 0
	i := 0
	for ; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "config: plaintext_loopback":
			opts = append(opts, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
		case line == "listener: tls":
			implicit = true
		case strings.HasPrefix(line, "deliver: "):
			deliveries, _ = strconv.Atoi(strings.TrimPrefix(line, "deliver: "))
		default:
			goto run
		}
	}
run:
	e := newEnv(t, opts...)
	for n := 0; n < deliveries; n++ {
		e.deliver(t, alice, "INBOX", simpleMessage("message "+strconv.Itoa(n+1)))
	}
	addr := e.plain
	if implicit {
		addr = e.implicit
	}
	c := dialRaw(t, addr, implicit)
	var forbidden []string
	for ; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\r")
		where := file + ":" + strconv.Itoa(i+1)
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "C: "):
			c.send(line[3:] + "\r\n")
		case strings.HasPrefix(line, "R: "):
			raw, err := strconv.Unquote(strings.TrimSpace(line[3:]))
			if err != nil {
				t.Fatalf("%s: bad quoted string: %v", where, err)
			}
			c.send(raw)
		case line == "S: closed":
			for got := c.line(); got != "closed"; got = c.line() {
				if got == "timeout" {
					t.Fatalf("%s: the connection is still open", where)
				}
			}
		case strings.HasPrefix(line, "S: "):
			want := strings.TrimSpace(line[3:])
			if got := c.line(); !strings.HasPrefix(got, want) {
				t.Fatalf("%s: got %q, want %q", where, got, want)
			}
		case strings.HasPrefix(line, "S* "):
			want := strings.TrimSpace(line[3:])
			for got := c.line(); !strings.HasPrefix(got, want); got = c.line() {
				if got == "closed" || got == "timeout" {
					t.Fatalf("%s: %s before %q", where, got, want)
				}
			}
		case strings.HasPrefix(line, "NOT: "):
			forbidden = append(forbidden, line[5:])
		case line == "TLS":
			c.startTLS()
		default:
			t.Fatalf("%s: unknown directive %q", where, line)
		}
	}
	c.conn.Close()
	for _, f := range forbidden {
		if strings.Contains(c.seen.String(), f) {
			t.Errorf("%s: the server sent %q:\n%s", file, f, c.seen.String())
		}
	}
}

// rawConn is a client that speaks raw IMAP lines.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	seen strings.Builder
}

func dialRaw(t *testing.T, addr string, implicitTLS bool) *rawConn {
	t.Helper()
	var conn net.Conn
	var err error
	if implicitTLS {
		conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReaderSize(conn, 1<<16)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// line reads one line, without its CRLF; "closed" when the server closed
// the connection, "timeout" after 10 seconds of silence.
func (c *rawConn) line() string {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.r.ReadString('\n')
	c.seen.WriteString(s)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		if s == "" {
			return "closed"
		}
	}
	return strings.TrimRight(s, "\r\n")
}

func (c *rawConn) startTLS() {
	c.t.Helper()
	if c.r.Buffered() > 0 {
		c.t.Fatalf("data after the STARTTLS reply")
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReaderSize(tc, 1<<16)
}

func removeFile(path string) error { return os.Remove(path) }

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
