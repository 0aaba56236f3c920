package remote

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

func wireOf(t testing.TB, in []byte, oneByte bool) []byte {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	r := bytes.NewReader(in)
	var err error
	if oneByte {
		err = writeData(w, iotest.OneByteReader(r), nil)
	} else {
		err = writeData(w, r, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Flush()
	return out.Bytes()
}

// checkWire checks the rules of DATA content and returns the lines
// without their CRLF, dot-stuffing undone.
func checkWire(t testing.TB, out []byte) []string {
	if !bytes.HasSuffix(out, []byte("\r\n.\r\n")) && !bytes.Equal(out, []byte(".\r\n")) {
		t.Fatalf("does not end with CRLF.CRLF: %q", out)
	}
	body := out[:len(out)-3]
	var lines []string
	for _, l := range bytes.SplitAfter(body, []byte("\r\n")) {
		if len(l) == 0 {
			continue
		}
		if !bytes.HasSuffix(l, []byte("\r\n")) {
			t.Fatalf("unterminated line %q", l)
		}
		c := l[:len(l)-2]
		if bytes.ContainsAny(c, "\r\n") {
			t.Fatalf("bare CR or LF in %q", l)
		}
		if len(c) > maxLine {
			t.Fatalf("line of %d bytes", len(c))
		}
		if len(c) > 0 && c[0] == '.' {
			if len(c) < 2 || c[1] != '.' {
				t.Fatalf("line %q starts with one dot", c)
			}
			c = c[1:]
		}
		lines = append(lines, string(c))
	}
	return lines
}

// normalize is what the receiver should see: line ends as CRLF, a final
// one added.
func normalize(in []byte) string {
	s := strings.ReplaceAll(string(in), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// unfold joins what writeData broke: a full line followed by one that it
// started with a space. (A full line followed by any other, an empty one
// say, was a line of exactly the maximum length: fuzzing found this
// joining the two.)
func unfold(lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		full := i > 0 && (len(lines[i-1]) == maxLine || len(lines[i-1]) == maxLine-1 && strings.HasPrefix(lines[i-1], "."))
		if full && strings.HasPrefix(l, " ") {
			b.WriteString(strings.TrimPrefix(l, " "))
		} else {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString(l)
		}
	}
	if len(lines) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

func TestWriteData(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{"a\nb\rc\r\n", "a\r\nb\r\nc\r\n.\r\n"},
		{"\r\r\n\n", "\r\n\r\n\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"x\r\n.\r\n..\r\n", "x\r\n..\r\n...\r\n.\r\n"},
		{strings.Repeat("y", 1000) + "\r\n", strings.Repeat("y", 998) + "\r\n yy\r\n.\r\n"},
		{"." + strings.Repeat("y", 998), ".." + strings.Repeat("y", 996) + "\r\n yy\r\n.\r\n"},
	} {
		for _, one := range []bool{false, true} {
			if got := string(wireOf(t, []byte(tc.in), one)); got != tc.want {
				t.Errorf("writeData(%q, oneByte=%v) = %q, want %q", tc.in, one, got, tc.want)
			}
		}
	}
}

// Whatever the content, what goes out follows the rules, and the receiver
// gets the content back (line ends normalised, long lines unfolded).
func FuzzWriteData(f *testing.F) {
	for _, s := range []string{"", "a\r\nb", ".\n.\r.", strings.Repeat("z", 2500), "\r\n\r\n.\r\n", "x\r", strings.Repeat("z", 998) + "\n\nx"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a := wireOf(t, in, false)
		b := wireOf(t, in, true)
		if !bytes.Equal(a, b) {
			t.Fatalf("chunking changes the output")
		}
		lines := checkWire(t, a)
		if got, want := unfold(lines), normalize(in); got != want && !bytes.ContainsAny(in, " ") {
			t.Fatalf("receiver gets %q, want %q", got, want)
		}
	})
}
