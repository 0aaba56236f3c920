package smtpd

import (
	"bytes"
	"strings"
	"testing"
)

// forgedAR is a message whose header claims results from us (in several
// spellings) and from another server.
const forgedAR = "Authentication-Results: mx.example.test; dkim=pass header.d=bank.test\r\n" +
	"Subject: hi\r\n" +
	"authentication-results:\r\n (a comment) MX.Example.Test 1;\r\n\tspf=pass\r\n" +
	"Authentication-Results: \"mx.example.test\"; dmarc=pass\r\n" +
	"Authentication-Results: mx.example.test.; dkim=pass header.d=bank.test\r\n" +
	"Authentication-Results : MX.EXAMPLE.TEST. 1; spf=pass smtp.mailfrom=bank.test\r\n" +
	"Authentication-Results: other.test; dkim=fail\r\n" +
	"From: x@remote.test\r\n" +
	"\r\n" +
	"Authentication-Results: mx.example.test; in the body, kept\r\n"

const forgedARClean = "Subject: hi\r\n" +
	"Authentication-Results: other.test; dkim=fail\r\n" +
	"From: x@remote.test\r\n" +
	"\r\n" +
	"Authentication-Results: mx.example.test; in the body, kept\r\n"

// Forged Authentication-Results fields are removed from a message that no
// filter stage checked (RFC 8601 section 5), and from one whose stages
// added no results of their own.
func TestForgedAuthResultsRemoved(t *testing.T) {
	for name, opts := range map[string][]any{"no pipeline": nil, "stages without results": {filterSet()}} {
		t.Run(name, func(t *testing.T) {
			e := newServer(t, opts...)
			c := e.dial(t, KindMX)
			c.expect("220")
			c.cmd("EHLO client.remote.test", "250")
			c.cmd("MAIL FROM:<x@remote.test>", "250")
			c.cmd("RCPT TO:<alice@example.test>", "250")
			c.cmd("DATA", "354")
			// "spammy" makes the test filter return a score and no
			// authentication results.
			msg := strings.Replace(forgedAR, "Subject: hi", "Subject: spammy", 1)
			c.send(msg + ".\r\n")
			id := queuedID(t, c)
			body := readFile(t, e.queue.SpoolPath(id))
			want := strings.Replace(forgedARClean, "Subject: hi", "Subject: spammy", 1)
			if !strings.HasSuffix(body, "\r\n"+want) || strings.Contains(body, "bank.test") {
				t.Errorf("spool file:\n%s", body)
			}
		})
	}
}

// The filter's result does not depend on how the message is cut into
// writes; an overlong field claiming to be ours is dropped too, and a
// message without a body keeps its last field.
func TestAuthResultsFilter(t *testing.T) {
	long := "Authentication-Results: (" + strings.Repeat("x", 2*maxHeldField) + ") mx.example.test; dkim=pass\r\n"
	longOther := "X-Long: " + strings.Repeat("y", 2*maxHeldField) + "\r\n"
	for _, tc := range []struct{ in, want string }{
		{forgedAR, forgedARClean},
		{long + longOther + "\r\nbody\r\n", longOther + "\r\nbody\r\n"},
		{"Subject: x\r\nAuthentication-Results: a.test; none\r\n", "Subject: x\r\nAuthentication-Results: a.test; none\r\n"},
		{"Subject: x\r\nAuthentication-Results: mx.example.test; none\r\n", "Subject: x\r\n"},
	} {
		for _, step := range []int{1, 3, 7, 4096, len(tc.in)} {
			var out bytes.Buffer
			f := newAuthResultsFilter(&out, "mx.example.test")
			for i := 0; i < len(tc.in); i += step {
				if n, err := f.Write([]byte(tc.in[i:min(i+step, len(tc.in))])); err != nil || n != min(step, len(tc.in)-i) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("step %d: got %.200q, want %.200q", step, out.String(), tc.want)
			}
		}
	}
}
