package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestWriteMessage(t *testing.T) {
	const msg = "Subject: x\r\nFrom: a\r\n\r\n.one\r\ntwo\r\n..three\r\n"
	for _, tc := range []struct {
		name  string
		in    string
		lines int
		want  string
	}{
		{"retr", msg, allLines, "Subject: x\r\nFrom: a\r\n\r\n..one\r\ntwo\r\n...three\r\n"},
		{"top 0", msg, 0, "Subject: x\r\nFrom: a\r\n\r\n"},
		{"top 1", msg, 1, "Subject: x\r\nFrom: a\r\n\r\n..one\r\n"},
		{"top 2", msg, 2, "Subject: x\r\nFrom: a\r\n\r\n..one\r\ntwo\r\n"},
		{"top more than there is", msg, 100, "Subject: x\r\nFrom: a\r\n\r\n..one\r\ntwo\r\n...three\r\n"},
		{"no body", "Subject: x\r\n", 0, "Subject: x\r\n"},
		{"no line ending at the end", "Subject: x\r\n\r\nend", allLines, "Subject: x\r\n\r\nend\r\n"},
		{"CR at the end", "Subject: x\r\n\r\nend\r", allLines, "Subject: x\r\n\r\nend\r\n"},
		{"bare LF", "Subject: x\n\n.a\nb\n", allLines, "Subject: x\r\n\r\n..a\r\nb\r\n"},
		{"bare LF top", "Subject: x\n\na\nb\n", 1, "Subject: x\r\n\r\na\r\n"},
		{"lone dot line", "S: x\r\n\r\n.\r\n", allLines, "S: x\r\n\r\n..\r\n"},
		{"empty", "", allLines, ""},
		{"header folding is not a body", "S: x\r\n y\r\n\r\nb\r\n", 0, "S: x\r\n y\r\n\r\n"},
		// The header ends where package header says, also in mail that
		// came in by APPEND: at a line that is neither a field nor a
		// continuation, the first line of the body.
		{"a line that is not a field ends the header", "S: x\r\nnot a field\r\nT: y\r\n", 0, "S: x\r\n"},
		{"a line that is not a field is the body", "S: x\r\nnot a field\r\nT: y\r\n", 1, "S: x\r\nnot a field\r\n"},
		{"a continuation first is the body", " S: x\r\nT: y\r\n", 0, ""},
		{"CRs only: an empty line", "S: x\r\n\r\r\nbody\r\n", 0, "S: x\r\n\r\r\n"},
		{"white space before the colon", "S : x\nT\t: y\n\nb\n", 0, "S : x\r\nT\t: y\r\n\r\n"},
		{"long dotted line", "S: x\r\n\r\n." + strings.Repeat("d", 100000) + "\r\n.z\r\n", allLines, "S: x\r\n\r\n.." + strings.Repeat("d", 100000) + "\r\n..z\r\n"},
		{"long line top", "S: x\r\n\r\n" + strings.Repeat("d", 100000) + "\r\nnext\r\n", 1, "S: x\r\n\r\n" + strings.Repeat("d", 100000) + "\r\n"},
	} {
		for _, reader := range []string{"whole", "one byte"} {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			r := strings.NewReader(tc.in)
			var err error
			if reader == "one byte" {
				err = writeMessage(w, iotest.OneByteReader(r), tc.lines)
			} else {
				err = writeMessage(w, r, tc.lines)
			}
			w.Flush()
			if err != nil || out.String() != tc.want {
				t.Errorf("%s (%s reads): writeMessage(%.40q, %d) = %.60q, %v, want %.60q", tc.name, reader, tc.in, tc.lines, out.String(), err, tc.want)
			}
		}
	}
}

func TestWriteMessageReadError(t *testing.T) {
	w := bufio.NewWriter(&bytes.Buffer{})
	err := writeMessage(w, iotest.ErrReader(errors.New("disk on fire")), allLines)
	var re readError
	if !errors.As(err, &re) {
		t.Fatalf("writeMessage with a failing reader = %v, want a readError", err)
	}
}
