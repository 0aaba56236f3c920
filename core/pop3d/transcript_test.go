package pop3d

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
)

// TestTranscripts walks testdata/transcripts. Each file is one session
// against a fresh server (see newServer), one directive per line:
//
//	# comment
//	config: plaintext_loopback    (before the first C/R/S line) allow USER/PASS from loopback without TLS
//	mail: USER "quoted message"   (before the first C/R/S line) deliver a message into USER's INBOX
//	listener: pop3 | pop3s        (before the first C/R/S line; default pop3)
//	C: text      send text and CRLF
//	R: "quoted"  send the Go-quoted bytes exactly as they are
//	S: prefix    read one line; it must start with prefix
//	S= text      read one line; it must be text exactly ("S=" alone: empty)
//	S: closed    the server must close the connection (after any lines)
//	TLS          start TLS on the connection (after the +OK to STLS)
//	SLEEP 100ms  pause
//
// Replies are matched on +OK/-ERR and their response code: the texts are
// free to change. Data lines of multi-line replies are matched exactly
// with S= (dot-stuffing included).
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
	type mail struct{ user, msg string }
	var (
		opts  []func(*config.Config)
		mails []mail
		kind  = KindPOP3
		e     *testEnv
		c     *rawConn
	)
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := file + ":" + strconv.Itoa(n)
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if c == nil {
			if v, ok := strings.CutPrefix(line, "config: "); ok {
				switch strings.TrimSpace(v) {
				case "plaintext_loopback":
					opts = append(opts, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
				default:
					t.Fatalf("%s: unknown config %q", where, v)
				}
				continue
			}
			if v, ok := strings.CutPrefix(line, "mail: "); ok {
				user, quoted, _ := strings.Cut(strings.TrimSpace(v), " ")
				msg, err := strconv.Unquote(quoted)
				if err != nil {
					t.Fatalf("%s: bad quoted message: %v", where, err)
				}
				mails = append(mails, mail{user, msg})
				continue
			}
			if v, ok := strings.CutPrefix(line, "listener: "); ok {
				kind = Kind(strings.TrimSpace(v))
				continue
			}
			e = newServer(t, opts...)
			for _, m := range mails {
				e.deliver(t, m.user, m.msg)
			}
			c = e.dial(t, kind)
		}
		switch {
		case strings.HasPrefix(line, "C: "):
			c.send(line[3:] + "\r\n")
		case strings.HasPrefix(line, "R: "):
			raw, err := strconv.Unquote(strings.TrimSpace(line[3:]))
			if err != nil {
				t.Fatalf("%s: bad quoted string: %v", where, err)
			}
			c.send(raw)
		case strings.HasPrefix(line, "S: "):
			want := strings.TrimSpace(line[3:])
			if want == "closed" {
				c.closed()
				continue
			}
			if got := c.line(); !strings.HasPrefix(got, want) {
				t.Fatalf("%s: got %q, want a line starting with %q", where, got, want)
			}
		case line == "S=" || strings.HasPrefix(line, "S= "):
			if got, want := c.line(), strings.TrimPrefix(line[2:], " "); got != want {
				t.Fatalf("%s: got %q, want %q", where, got, want)
			}
		case line == "TLS":
			c.startTLSAfterReply(e.tls)
		case strings.HasPrefix(line, "SLEEP "):
			d, err := time.ParseDuration(strings.TrimSpace(line[6:]))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			time.Sleep(d)
		default:
			t.Fatalf("%s: unknown directive %q", where, line)
		}
	}
}
