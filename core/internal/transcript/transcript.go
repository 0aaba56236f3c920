// Package transcript runs the transcript tests of the protocol servers
// (SMTP, POP3, IMAP): files that script one client session, line by line,
// against a fresh server. One runner serves the three packages so that a
// transcript reads the same wherever it is.
//
// A transcript is a text file, one directive per line:
//
//	# comment                (and blank lines) ignored
//	key: value               before the session's first line: set up the
//	                         server (see Server.Set; e.g. "listener: tls")
//	C: text                  send text and CRLF ("C:" alone: an empty line)
//	R: "quoted"              send the Go-quoted bytes exactly as they are
//	S: prefix                read one reply; it must start with prefix
//	S= text                  read one line; it must be text exactly
//	                         ("S=" alone: an empty line)
//	S* prefix                read lines until one starts with prefix
//	S: closed                the server must close the connection (what it
//	                         says first is skipped)
//	NOT: text                no line read in the whole session may contain
//	                         text (checked at the end)
//	TLS                      start TLS on the connection (after the server
//	                         agreed to STARTTLS or STLS)
//	SLEEP 100ms              pause
//
// A reply is one line, or for protocols with multi-line replies (SMTP's
// "250-"), the lines up to the last, which S: matches. Replies are matched
// on a prefix (their code, status or tag) so that the texts are free to
// change.
package transcript

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is what a protocol's tests provide for one transcript.
type Server interface {
	// Set takes a "key: value" directive met before the session's first
	// line (the runner has trimmed both); an error fails the transcript
	// (use it for unknown keys).
	Set(key, value string) error
	// Dial starts the server as set up and connects to it, over TLS if the
	// listener speaks it from the start. clientTLS is the configuration
	// for a TLS directive. The runner closes conn.
	Dial() (conn net.Conn, clientTLS *tls.Config, err error)
}

// Options says how a protocol's replies look.
type Options struct {
	// Continued reports whether a reply line is followed by more lines of
	// the same reply (SMTP: "250-..."). Nil: every reply is one line.
	Continued func(line string) bool
	// Timeout bounds each read and write, a safety ceiling for a server
	// that says nothing (a read that times out gives "timeout"). Zero
	// means 10 seconds.
	Timeout time.Duration
}

// Run runs each file matching glob (e.g. "testdata/transcripts/*.txt") as
// a parallel subtest named after the file, against the Server newServer
// returns for it. It fails t if no file matches.
func Run(t *testing.T, glob string, newServer func(t *testing.T) Server, o Options) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("transcript: no transcripts match %s: %v", glob, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)), func(t *testing.T) {
			t.Parallel()
			script, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := Play(f, script, newServer(t), o); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Play runs one transcript, script, against srv; name (the file) prefixes
// the line numbers in errors. It returns the first expectation that was
// not met (joined with any NOT: violations), or nil.
func Play(name string, script []byte, srv Server, o Options) error {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	var c *conn
	defer func() {
		if c != nil {
			c.nc.Close()
		}
	}()
	var forbidden []string
	sc := bufio.NewScanner(strings.NewReader(string(script)))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := name + ":" + strconv.Itoa(n)
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if c == nil {
			if key, value, ok := setting(line); ok {
				if err := srv.Set(key, value); err != nil {
					return fmt.Errorf("%s: %v", where, err)
				}
				continue
			}
			nc, cfg, err := srv.Dial()
			if err != nil {
				return fmt.Errorf("%s: dial: %v", where, err)
			}
			c = &conn{nc: nc, r: bufio.NewReaderSize(nc, 1<<16), tls: cfg, o: o}
		}
		if err := c.do(line, &forbidden); err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if c == nil {
		return fmt.Errorf("%s: no session", name)
	}
	c.nc.Close()
	var errs []error
	for _, f := range forbidden {
		if strings.Contains(c.seen.String(), f) {
			errs = append(errs, fmt.Errorf("%s: the server sent %q:\n%s", name, f, c.seen.String()))
		}
	}
	return errors.Join(errs...)
}

// setting splits a "key: value" set-up line; the session's directives are
// not settings.
func setting(line string) (key, value string, ok bool) {
	key, value, ok = strings.Cut(line, ":")
	if !ok || key == "" || strings.ContainsAny(key, " \t") {
		return "", "", false
	}
	switch key {
	case "C", "R", "S", "NOT":
		return "", "", false
	}
	return key, strings.TrimSpace(value), true
}

// conn is the client side of the session.
type conn struct {
	nc   net.Conn
	r    *bufio.Reader
	tls  *tls.Config
	o    Options
	seen strings.Builder
}

func (c *conn) do(line string, forbidden *[]string) error {
	switch {
	case line == "C:":
		return c.send("\r\n")
	case strings.HasPrefix(line, "C: "):
		return c.send(line[3:] + "\r\n")
	case strings.HasPrefix(line, "R: "):
		raw, err := strconv.Unquote(strings.TrimSpace(line[3:]))
		if err != nil {
			return fmt.Errorf("bad quoted string: %v", err)
		}
		return c.send(raw)
	case strings.TrimSpace(line) == "S: closed":
		// Whatever the server says first, it must then hang up.
		for i := 0; ; i++ {
			switch got := c.line(); {
			case got == "closed":
				return nil
			case got == "timeout":
				return fmt.Errorf("the connection is still open, want it closed")
			case i == 1000:
				return fmt.Errorf("the server is still talking, want the connection closed")
			}
		}
	case strings.HasPrefix(line, "S: "):
		want := strings.TrimSpace(line[3:])
		if got := c.reply(); !strings.HasPrefix(got, want) {
			return fmt.Errorf("got %q, want a reply starting with %q", got, want)
		}
	case line == "S=" || strings.HasPrefix(line, "S= "):
		if got, want := c.line(), strings.TrimPrefix(line[2:], " "); got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
	case strings.HasPrefix(line, "S* "):
		want := strings.TrimSpace(line[3:])
		for got := c.line(); !strings.HasPrefix(got, want); got = c.line() {
			if got == "closed" || got == "timeout" {
				return fmt.Errorf("%s before a line starting with %q", got, want)
			}
		}
	case strings.HasPrefix(line, "NOT: "):
		*forbidden = append(*forbidden, line[5:])
	case line == "TLS":
		return c.startTLS()
	case strings.HasPrefix(line, "SLEEP "):
		d, err := time.ParseDuration(strings.TrimSpace(line[6:]))
		if err != nil {
			return err
		}
		time.Sleep(d)
	default:
		return fmt.Errorf("unknown directive %q", line)
	}
	return nil
}

func (c *conn) send(s string) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	if _, err := io.WriteString(c.nc, s); err != nil {
		return fmt.Errorf("send %q: %v", s, err)
	}
	return nil
}

// line reads one line without its CRLF: "closed" when the server closed
// the connection, "timeout" when it said nothing for the timeout.
func (c *conn) line() string {
	c.nc.SetReadDeadline(time.Now().Add(c.o.Timeout))
	s, err := c.r.ReadString('\n')
	c.seen.WriteString(s)
	if err != nil && s == "" {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "closed"
	}
	return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
}

// reply reads one reply and returns its last line.
func (c *conn) reply() string {
	for {
		l := c.line()
		if c.o.Continued == nil || l == "closed" || l == "timeout" || !c.o.Continued(l) {
			return l
		}
	}
}

// startTLS starts TLS once the server's go-ahead has been read. Anything
// the server sent in plain text after it would be lost, as it should be:
// that is an error.
func (c *conn) startTLS() error {
	if n := c.r.Buffered(); n > 0 {
		return fmt.Errorf("the server sent %d bytes after agreeing to start TLS", n)
	}
	tc := tls.Client(c.nc, c.tls)
	tc.SetDeadline(time.Now().Add(c.o.Timeout))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc, c.r = tc, bufio.NewReaderSize(tc, 1<<16)
	return nil
}
