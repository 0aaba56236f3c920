package imapd

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/mimelimit"
)

// structureSamples are messages of every shape bodyStructure must read as
// imapserver.ExtractBodyStructure does. (One malformed shape differs: a
// part whose header runs into the next delimiter is a part with that
// header for bodyStructure, where imapserver stops reading the multipart.)
var structureSamples = map[string]string{
	"empty":              "",
	"no body":            "Subject: x\r\n",
	"plain":              "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline 1\r\nline 2\r\n",
	"no final eol":       "Subject: x\r\n\r\nline 1\r\nline 2",
	"lf only":            "Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\none\ntwo\n--b\n\nthree\n--b--\n",
	"blank lines":        "Subject: x\r\n\r\n\r\n\r\nx\r\n\r\n",
	"binary":             "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Language: en, de\r\nContent-Location: http://x.test/a\r\nContent-Id: <a@b>\r\nContent-Description: desc\r\n\r\nAAAA\r\nBBBB\r\n",
	"alternative":        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"=_alt\"\r\n\r\npreamble\r\n--=_alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n\r\n--=_alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--=_alt--\r\nepilogue\r\n",
	"padding":            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b-- \r\n",
	"nested":             "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\na\r\n--inner\r\nContent-Type: text/html\r\n\r\n<b>a</b>\r\n--inner--\r\n\r\n--outer\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--outer--\r\n",
	"outer closes inner": "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\na\r\n--outer\r\n\r\nb\r\n--outer--\r\n",
	"rfc822":             "Subject: fwd\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nsee below\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: inner\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-Id: <in@x>\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nplain\r\n--c\r\nContent-Type: text/html\r\n\r\nhtml\r\n--c--\r\n--b--\r\n",
	"top rfc822":         "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
	"empty rfc822":       "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n--b--\r\n",
	"unterminated":       "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n",
	"digest":             "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--\r\n",
	"folded ct":          "Content-Type: multipart/mixed;\r\n\tboundary=\"long boundary\"\r\n\r\n--long boundary\r\nContent-Type: text/plain;\r\n charset=iso-8859-1\r\n\r\nx\r\n--long boundary--\r\n",
	"similar bounds":     "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=bb\r\n\r\n--bb\r\n\r\nx\r\n--bbx\r\n--bb--\r\n--b--\r\n",
	"long line":          "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + strings.Repeat("x", 200<<10) + "\r\n--b--\r\n",
}

func TestBodyStructureAsImapserver(t *testing.T) {
	for name, msg := range structureSamples {
		want := imapserver.ExtractBodyStructure(strings.NewReader(msg))
		got := bodyStructure(strings.NewReader(msg))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, dump(got), dump(want))
		}
	}
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

// FuzzBodyStructure checks that bodyStructure never panics on what a view
// of any message gives it, and always has a structure.
func FuzzBodyStructure(f *testing.F) {
	for _, s := range structureSamples {
		f.Add(s)
	}
	lim := mimelimit.Limits{HeaderBytes: 1 << 10, HeaderFields: 10, MaxDepth: 4, MaxParts: 20}
	f.Fuzz(func(t *testing.T, msg string) {
		if bodyStructure(mimelimit.NewView(strings.NewReader(msg), lim)) == nil {
			t.Fatal("no structure")
		}
	})
}
