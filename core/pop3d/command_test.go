package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	valid := []struct {
		line string
		want command
	}{
		{"QUIT", command{name: "QUIT"}},
		{"stat", command{name: "STAT"}},
		{"LIST 1", command{name: "LIST", arg: "1", args: []string{"1"}}},
		{"TOP 1 10", command{name: "TOP", arg: "1 10", args: []string{"1", "10"}}},
		{"PASS two words ", command{name: "PASS", arg: "two words ", args: []string{"two", "words"}}},
		{"PASS", command{name: "PASS"}},
		{"USER alice@example.test", command{name: "USER", arg: "alice@example.test", args: []string{"alice@example.test"}}},
		{"XLONGKEYWORDSIXT", command{name: "XLONGKEYWORDSIXT"}},
	}
	for _, tc := range valid {
		got, err := parseCommand([]byte(tc.line))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseCommand(%q) = %+v, %v, want %+v, nil", tc.line, got, err, tc.want)
		}
	}
	invalid := []string{
		"",
		" QUIT",
		"QU1T",
		"XLONGKEYWORDSEVEN",
		"PASS a\x00b",
		"USER x\ry",
		"NOOP\t",
		"LIST \x7f",
		"RETR 1" + strings.Repeat(" ", 300),
	}
	for _, line := range invalid {
		if got, err := parseCommand([]byte(line)); err == nil {
			t.Errorf("parseCommand(%q) = %+v, nil, want an error", line, got)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"1", 1}, {"0", 0}, {"007", 7}, {"2147483647", 2147483647},
		{"", -1}, {"-1", -1}, {"+1", -1}, {"1 ", -1}, {"0x10", -1}, {"1e3", -1},
		{"2147483648", -1}, {"4294967297", -1}, {"99999999999999999999", -1}, {"١", -1},
	} {
		if got := parseNumber(tc.in); got != tc.want {
			t.Errorf("parseNumber(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestReadLine(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("STAT\r\nLIST\n"+strings.Repeat("x", 254)+"\r\n"+strings.Repeat("y", 300)+"\r\nQUIT"), readBuffer)
	for _, want := range []string{"STAT", "LIST"} {
		got, err := readLine(r, maxCommandLine)
		if err != nil || string(got) != want {
			t.Fatalf("readLine = %q, %v, want %q, nil", got, err, want)
		}
	}
	if got, err := readLine(r, maxCommandLine); !errors.Is(err, errLineTooLong) {
		t.Fatalf("readLine of 256 octets = %q, %v, want errLineTooLong", got, err)
	}
	if got, err := readLine(r, maxCommandLine); !errors.Is(err, errLineTooLong) {
		t.Fatalf("readLine of 302 octets = %q, %v, want errLineTooLong", got, err)
	}
	if got, err := readLine(r, maxCommandLine); err != io.EOF {
		t.Fatalf("readLine of an unterminated last line = %q, %v, want io.EOF", got, err)
	}
	big := bufio.NewReaderSize(strings.NewReader(strings.Repeat("z", 10000)+"\r\n"), readBuffer)
	if _, err := readLine(big, maxSASLLine); !errors.Is(err, errLineTooLong) {
		t.Fatalf("readLine of 10002 octets = %v, want errLineTooLong", err)
	}
}

// FuzzCommand feeds arbitrary input through the command reader and
// parser, as the session does, and checks what comes out.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{
		"USER alice@example.test\r\n", "PASS secret with spaces\r\n", "RETR 1\r\n", "TOP 1 10\r\n",
		"LIST\r\nUIDL 2\r\nQUIT\r\n", "RETR 99999999999999999999\r\n", "DELE -1\r\n", "AUTH PLAIN =\r\n",
		"STLS\r\nUSER x\r\n", "no\x00pe\r\n", "\r\n", "\n\n", strings.Repeat("A", 300) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), readBuffer)
		for {
			line, err := readLine(r, maxCommandLine)
			if err != nil {
				return
			}
			if len(line) > maxCommandLine || bytes.ContainsAny(line, "\n") {
				t.Fatalf("readLine returned %q", line)
			}
			cmd, err := parseCommand(line)
			if err != nil {
				continue
			}
			if cmd.name == "" || len(cmd.name) > maxKeyword || strings.ToUpper(cmd.name) != cmd.name {
				t.Fatalf("parseCommand(%q): name %q", line, cmd.name)
			}
			for _, c := range []byte(cmd.arg) {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("parseCommand(%q): control character in arg %q", line, cmd.arg)
				}
			}
			for _, a := range cmd.args {
				n := parseNumber(a)
				if n < -1 || n > maxMsgNumber {
					t.Fatalf("parseNumber(%q) = %d, out of bounds", a, n)
				}
				if n >= 0 {
					if v, err := strconv.ParseUint(a, 10, 64); err != nil || v != uint64(n) {
						t.Fatalf("parseNumber(%q) = %d, strconv says %d, %v", a, n, v, err)
					}
				}
			}
		}
	})
}
