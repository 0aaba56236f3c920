package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
)

// Line limits.
const (
	// maxCommandLine is the longest command line, CRLF included (RFC
	// 2449 section 4: 255 octets).
	maxCommandLine = 255
	// maxSASLLine is the longest SASL response line (RFC 5034 section 4).
	// RFC 5034 bounds only the AUTH command itself by the 255 octets; a
	// PLAIN response carries a password of up to auth.MaxPasswordLength
	// bytes, which takes about 1.4 KiB in base64.
	maxSASLLine = 4000
	// readBuffer is the size of a session's read buffer: the most a
	// client can make the server hold, whatever it sends.
	readBuffer = 4096
	// maxKeyword is the longest command keyword accepted. RFC 1939
	// keywords have 3 or 4 characters; RFC 2449 section 4 allows
	// extensions longer ones.
	maxKeyword = 16
)

// Errors from reading and parsing command lines.
var (
	errLineTooLong = errors.New("pop3d: line too long")
	errSyntax      = errors.New("pop3d: malformed command")
)

// command is one parsed command line.
type command struct {
	// name is the keyword in upper case.
	name string
	// arg is everything after the keyword and one space, as sent (PASS
	// keeps spaces in passwords, RFC 1939 section 7).
	arg string
	// args is arg split at spaces.
	args []string
}

// parseCommand parses one command line without its line ending. The
// keyword must be ASCII letters; the arguments must not contain control
// characters (a NUL or a CR inside a line is an attack or a broken
// client, never a password).
func parseCommand(line []byte) (command, error) {
	if len(line) == 0 || len(line) > maxCommandLine {
		return command{}, errSyntax
	}
	for _, c := range line {
		if c < 0x20 || c == 0x7f {
			return command{}, errSyntax
		}
	}
	name, arg, _ := bytes.Cut(line, []byte{' '})
	if len(name) == 0 || len(name) > maxKeyword {
		return command{}, errSyntax
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return command{}, errSyntax
		}
	}
	cmd := command{name: strings.ToUpper(string(name)), arg: string(arg)}
	if f := strings.Fields(cmd.arg); len(f) > 0 {
		cmd.args = f
	}
	return cmd, nil
}

// maxMsgNumber bounds message numbers and TOP line counts: more than any
// mailbox holds, and small enough for an int on every platform.
const maxMsgNumber = 1<<31 - 1

// parseNumber parses a message number or line count: ASCII digits only
// (no sign, no spaces), at most maxMsgNumber. It returns -1 for anything
// else.
func parseNumber(s string) int {
	if s == "" || len(s) > 10 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	if n > maxMsgNumber {
		return -1
	}
	return n
}

// readLine reads one line of at most max octets, line ending included,
// and returns it without its line ending (CRLF, or a bare LF, which is
// tolerated). A longer line gives errLineTooLong: the caller must close
// the connection, since the rest of the line is still unread. Nothing
// beyond the reader's buffer is ever held.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > max {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
