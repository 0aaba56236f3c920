package smtpd

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTranscripts walks testdata/transcripts. Each file is one session
// against a fresh server (see newServer), one directive per line:
//
//	# comment
//	listener: mx | submission | submissions   (first, optional; default mx)
//	C: text      send text and CRLF ("C:" alone sends an empty line)
//	R: "quoted"  send the Go-quoted bytes exactly as they are
//	S: prefix    read one reply; it must start with prefix
//	S: closed    the server must close the connection
//	TLS          start TLS on the connection (after the 220 to STARTTLS)
//	SLEEP 100ms  pause
//
// Replies are matched on their code and, when given, enhanced code: the
// texts are free to change.
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
	e := newServer(t)
	var c *rawConn
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := file + ":" + strconv.Itoa(n)
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if c == nil {
			kind := KindMX
			if k, ok := strings.CutPrefix(line, "listener: "); ok {
				kind = Kind(strings.TrimSpace(k))
				c = e.dial(t, kind)
				continue
			}
			c = e.dial(t, kind)
		}
		switch {
		case line == "C:":
			c.send("\r\n")
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
			got := c.reply()
			if want == "closed" {
				// Whatever the server said last, it must then hang up.
				for got != "closed" && got != "timeout" && len(got) > 0 && got[0] >= '2' && got[0] <= '5' {
					got = c.reply()
				}
			}
			if !strings.HasPrefix(got, want) {
				t.Fatalf("%s: reply %q, want %q", where, got, want)
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
