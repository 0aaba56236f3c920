package header

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func read(t *testing.T, s string) Header {
	t.Helper()
	h, err := Read(bufio.NewReader(strings.NewReader(s)))
	if err != nil {
		t.Fatalf("Read(%q): %v", s, err)
	}
	return h
}

// TestPolicy is the policy of the package doc, one case a rule.
func TestPolicy(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     Header
	}{
		{"CRLF", "A: 1\r\nB: 2\r\n\r\nbody\r\n", Header{{"A", "1"}, {"B", "2"}}},
		{"bare LF", "A: 1\nB: 2\n\nbody\n", Header{{"A", "1"}, {"B", "2"}}},
		{"mixed line ends", "A: 1\r\nB: 2\n\r\nC: body\r\n", Header{{"A", "1"}, {"B", "2"}}},
		{"folding kept as CRLF", "A: 1\r\n\t2\n  3\r\n\r\n", Header{{"A", "1\r\n\t2\r\n  3"}}},
		{"obs-fold: a line of white space only", "A: 1\r\n \r\n 2\r\n\r\n", Header{{"A", "1\r\n \r\n 2"}}},
		{"one space after the colon dropped", "A:  1 \r\nB:2\r\nC:\r\n\r\n", Header{{"A", " 1 "}, {"B", "2"}, {"C", ""}}},
		{"white space before the colon", "From : a\r\nTo\t \t:b\r\n\r\n", Header{{"From", "a"}, {"To", "b"}}},
		{"no body", "A: 1\r\nB: 2\r\n", Header{{"A", "1"}, {"B", "2"}}},
		{"no body, no last line end", "A: 1\r\nB: 2", Header{{"A", "1"}, {"B", "2"}}},
		{"no blank line before the body", "A: 1\r\nbody text\r\nB: 2\r\n", Header{{"A", "1"}}},
		{"a name with a space", "A: 1\r\nB C: 2\r\n", Header{{"A", "1"}}},
		{"an empty name", "A: 1\r\n: 2\r\n", Header{{"A", "1"}}},
		{"an 8-bit name", "A: 1\r\nB\xe9: 2\r\n", Header{{"A", "1"}}},
		{"a continuation first", " A: 1\r\nB: 2\r\n", nil},
		{"empty header", "\r\nA: 1\r\n", nil},
		{"empty input", "", nil},
		{"8-bit value kept", "Subject: caf\xe9\r\n\r\n", Header{{"Subject", "caf\xe9"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := read(t, c.in); !reflect.DeepEqual(got, c.want) {
				t.Errorf("Read(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// The reader stops right after the line that ends the header: the body
// is what is left.
func TestReadLeavesBody(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("A: 1\r\n\r\nB: 2\r\n"))
	if _, err := Read(br); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "B: 2\r\n" {
		t.Errorf("left %q", rest)
	}
}

func TestGet(t *testing.T) {
	h := read(t, "Subject:  Hello\r\n there\r\nTo: a\r\nto: b\n c\r\n\r\n")
	if got := h.Get("subject"); got != "Hello there" {
		t.Errorf("Get(subject) = %q", got)
	}
	if got := h.Get("X-None"); got != "" {
		t.Errorf("Get(X-None) = %q", got)
	}
	if got := h.Values("TO"); !reflect.DeepEqual(got, []string{"a", "b c"}) {
		t.Errorf("Values(TO) = %q", got)
	}
	if got := Unfold(" a\r\n\tb\n c "); got != "a\tb c" {
		t.Errorf("Unfold = %q", got)
	}
}

func TestEndsHeader(t *testing.T) {
	for _, c := range []struct {
		line       string
		afterField bool
		want       bool
	}{
		{"\r\n", true, true}, {"\n", false, true}, {"", true, true},
		{"A: 1\r\n", false, false}, {"A : 1", true, false}, {"A:", false, false},
		{" x\r\n", true, false}, {" x\r\n", false, true}, {"\tA: 1\n", false, true},
		{"not a field\r\n", true, true}, {": x\r\n", true, true}, {"A B: x\r\n", true, true},
	} {
		if got := EndsHeader([]byte(c.line), c.afterField); got != c.want {
			t.Errorf("EndsHeader(%q, %v) = %v, want %v", c.line, c.afterField, got, c.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"Subject": true, "X-A_b.c!~": true, "": false, "A B": false, "A:B": false, "A\t": false, "Caf\xe9": false, "A\x7f": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestLimits(t *testing.T) {
	// Fields: exactly the limit is fine, one more is not.
	h, err := ReadLimits(bufio.NewReader(strings.NewReader(strings.Repeat("X: y\r\n", 3)+"\r\n")), Limits{Fields: 3})
	if err != nil || len(h) != 3 {
		t.Errorf("3 fields, limit 3: %d fields, %v", len(h), err)
	}
	h, err = ReadLimits(bufio.NewReader(strings.NewReader(strings.Repeat("X: y\r\n", 4)+"\r\n")), Limits{Fields: 3})
	if !errors.Is(err, ErrTooLarge) || len(h) != 3 {
		t.Errorf("4 fields, limit 3: %d fields, %v", len(h), err)
	}
	if _, err := Read(bufio.NewReader(strings.NewReader(strings.Repeat("X: y\r\n", MaxFields+1)))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxFields+1 fields: %v", err)
	}
	// Bytes: the line that passes the limit is not read in.
	h, err = ReadLimits(bufio.NewReader(strings.NewReader("A: 1\r\nB: 2\r\n\r\n")), Limits{Bytes: 8})
	if !errors.Is(err, ErrTooLarge) || !reflect.DeepEqual(h, Header{{"A", "1"}}) {
		t.Errorf("bytes limit: %q, %v", h, err)
	}
	h, err = ReadLimits(bufio.NewReader(strings.NewReader("A: 1\r\nB: 2\r\n\r\n")), Limits{Bytes: 14})
	if err != nil || len(h) != 2 {
		t.Errorf("exactly the limit: %q, %v", h, err)
	}
	// A line longer than the reader's buffer is read whole...
	long := "X-Long: " + strings.Repeat("a", 5000)
	h, err = Read(bufio.NewReaderSize(strings.NewReader(long+"\r\n\r\n"), 16))
	if err != nil || len(h) != 1 || len(h[0].Value) != 5000 {
		t.Errorf("long line: %d fields, %v", len(h), err)
	}
	// ...within the limit: one past it is not kept in memory whole.
	r := &countingReader{r: strings.NewReader("A: " + strings.Repeat("a", 10<<20))}
	if _, err := ReadLimits(bufio.NewReaderSize(r, 4096), Limits{Bytes: 64 << 10}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one huge line: %v", err)
	}
	if r.n > 64<<10+2*4096 {
		t.Errorf("one huge line: read %d bytes for a 64 KiB limit", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Many continuation lines are joined in linear time (a safety ceiling, not
// a speed test: a quadratic join of 100000 lines does not finish).
func TestLongContinuation(t *testing.T) {
	raw := "X-Long: a" + strings.Repeat("\r\n b", 100000) + "\r\n\r\n"
	h := read(t, raw)
	if len(h) != 1 || len(h[0].Value) != len(raw)-len("X-Long: ")-4 {
		t.Fatalf("%d fields", len(h))
	}
}

func TestSection(t *testing.T) {
	for _, c := range []struct {
		in, want  string
		max       int64
		truncated bool
	}{
		{"A: 1\r\n b\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\n b\r\nB: 2\r\n", 0, false},
		{"A: 1\nB: 2\n\nbody\n", "A: 1\nB: 2\n", 0, false},
		{"A: 1\r\nbody\r\n\r\nC: 3\r\n", "A: 1\r\n", 0, false},
		{"A: 1\r\nB: 2", "A: 1\r\nB: 2", 0, false},
		{"A: 1\r\nB: 2\r\n\r\n", "A: 1\r\n", 10, true},
		{"A: 1\r\nB: 2\r\n\r\n", "A: 1\r\nB: 2\r\n", 12, false},
		{" A: 1\r\n", "", 0, false},
	} {
		raw, truncated, err := Section(bufio.NewReader(strings.NewReader(c.in)), c.max)
		if err != nil || string(raw) != c.want || truncated != c.truncated {
			t.Errorf("Section(%q, %d) = %q, %v, %v; want %q, %v", c.in, c.max, raw, truncated, err, c.want, c.truncated)
		}
	}
}

func FuzzRead(f *testing.F) {
	for _, s := range []string{
		"A: b\r\n\r\n", "A: b\r\n c\r\n\r\nbody", ": x\r\n", " leading\r\nA: b", "A:b\nB:c\n\n", "\r\n",
		strings.Repeat("x", 5000) + ": y\r\n", "A: 1\r\n \r\n\t\r\nB : 2\r\r\n\r\n", "A: 1\rB: 2\r\n", "A\x00: 1\r\n",
		"A: 1\r\nnot a field\r\nB: 2\r\n", "From: a\xff\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lim := Limits{Bytes: 4096, Fields: 20}
		h, err := ReadLimits(bufio.NewReaderSize(strings.NewReader(s), 16), lim)
		if err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Read(%q): %v", s, err)
		}
		if len(h) > lim.Fields {
			t.Fatalf("%d fields past the limit of %d", len(h), lim.Fields)
		}
		size := 0
		for _, fld := range h {
			if fld.Name == "" || strings.ContainsAny(fld.Name, " \t\r\n:") {
				t.Fatalf("bad field name %q from %q", fld.Name, s)
			}
			size += len(fld.Name) + len(fld.Value)
		}
		if int64(size) > lim.Bytes {
			t.Fatalf("%d bytes of fields past the limit of %d", size, lim.Bytes)
		}
		// Section cuts the same header out of the input: read again, it
		// gives the same fields.
		raw, truncated, serr := Section(bufio.NewReaderSize(strings.NewReader(s), 16), lim.Bytes)
		if serr != nil || int64(len(raw)) > lim.Bytes || !strings.HasPrefix(s, string(raw)) {
			t.Fatalf("Section(%q) = %q, %v", s, raw, serr)
		}
		if err == nil && !truncated {
			again, err := Parse(raw)
			if err != nil || !reflect.DeepEqual(again, h) && !(len(again) == 0 && len(h) == 0) {
				t.Fatalf("Section(%q) = %q reads as %q, not %q", s, raw, again, h)
			}
		}
	})
}
