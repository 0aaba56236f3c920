package main

// The clients of the imap and pop3 sections: raw net.Conn and bufio,
// enough of IMAP4rev1 and POP3 to log in, select and fetch, or list and
// retrieve, and to count what comes back, without parsing it more than
// that. IMAP responses are read line by line with bufio.Reader.ReadSlice
// (no copy); a line that ends with a literal's announcement {N} is
// followed by N bytes, skipped with Discard, and by the rest of the
// response. Only the start of each response is looked at: "* N FETCH",
// "* N EXISTS" or the tag.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// mailConnBuffer is the read buffer of both clients.
const mailConnBuffer = 64 << 10

// imapClient is a connection to an IMAP server.
type imapClient struct {
	c    net.Conn
	br   *bufio.Reader
	tag  int
	head []byte // the start of the response being read
	tail []byte // the end of the line being read, for literals
}

// imapResult is what a command's responses said.
type imapResult struct {
	status    string // OK, NO or BAD
	text      string // the tagged response
	responses int    // untagged responses
	fetches   int    // "* N FETCH" responses
	exists    int    // the last "* N EXISTS", or -1
	bytes     int64  // everything read, literals included
	bye       string // the BYE response, if any
}

// dialIMAP connects and reads the greeting, which must be "* OK".
func dialIMAP(addr string, timeout time.Duration) (*imapClient, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	cl := newIMAPClient(c)
	c.SetDeadline(time.Now().Add(timeout))
	head, _, err := cl.readResponse()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading the greeting: %w", err)
	}
	if !bytes.HasPrefix(head, []byte("* OK")) {
		c.Close()
		return nil, fmt.Errorf("greeting %q", strings.TrimSpace(string(head)))
	}
	return cl, nil
}

func newIMAPClient(c net.Conn) *imapClient {
	return &imapClient{c: c, br: bufio.NewReaderSize(c, mailConnBuffer), head: make([]byte, 0, 128), tail: make([]byte, 0, 64)}
}

func (cl *imapClient) Close() error { return cl.c.Close() }

// command sends a command, reads every response up to the tagged one and
// returns what they said. Only a transport error is an error; NO and BAD
// are in the result.
func (cl *imapClient) command(timeout time.Duration, format string, args ...any) (imapResult, error) {
	cl.tag++
	tag := fmt.Sprintf("b%d", cl.tag)
	cl.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(cl.c, tag+" "+format+"\r\n", args...); err != nil {
		return imapResult{}, err
	}
	res := imapResult{exists: -1}
	for {
		head, n, err := cl.readResponse()
		res.bytes += n
		if err != nil {
			if res.bye != "" {
				err = fmt.Errorf("%w after %q", err, res.bye)
			}
			return res, err
		}
		if len(head) > len(tag) && string(head[:len(tag)]) == tag && head[len(tag)] == ' ' {
			res.text = strings.TrimSpace(string(head))
			st, _, _ := strings.Cut(res.text[len(tag)+1:], " ")
			res.status = strings.ToUpper(st)
			return res, nil
		}
		if !bytes.HasPrefix(head, []byte("* ")) {
			continue // a continuation request; none is expected
		}
		res.responses++
		rest := head[2:]
		if bytes.HasPrefix(rest, []byte("BYE")) {
			// Expected before LOGOUT's OK; otherwise the server closes.
			res.bye = strings.TrimSpace(string(head))
			continue
		}
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			continue
		}
		switch {
		case bytes.HasPrefix(rest[i:], []byte(" FETCH ")):
			res.fetches++
		case bytes.HasPrefix(rest[i:], []byte(" EXISTS")):
			res.exists, _ = strconv.Atoi(string(rest[:i]))
		}
	}
}

// readResponse reads one response: a line and, for every literal
// announced at the end of a line, the literal and the next line. It
// returns the first bytes of the response (valid until the next call)
// and how many bytes it read.
func (cl *imapClient) readResponse() (head []byte, n int64, err error) {
	cl.head = cl.head[:0]
	for {
		line, err := cl.br.ReadSlice('\n')
		n += int64(len(line))
		if room := cap(cl.head) - len(cl.head); room > 0 {
			cl.head = append(cl.head, line[:min(room, len(line))]...)
		}
		// Keep the last bytes of the line: a literal's {N} may straddle
		// two reads of a long line.
		if len(line) >= cap(cl.tail) {
			cl.tail = append(cl.tail[:0], line[len(line)-cap(cl.tail):]...)
		} else {
			if over := len(cl.tail) + len(line) - cap(cl.tail); over > 0 {
				cl.tail = cl.tail[:copy(cl.tail, cl.tail[over:])]
			}
			cl.tail = append(cl.tail, line...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return cl.head, n, err
		}
		size, ok := literalSize(cl.tail)
		cl.tail = cl.tail[:0]
		if !ok {
			return cl.head, n, nil
		}
		if _, err := cl.br.Discard(int(size)); err != nil {
			return cl.head, n, fmt.Errorf("reading a literal of %d bytes: %w", size, err)
		}
		n += size
	}
}

// literalSize returns N if line ends with a literal's announcement,
// "{N}\r\n" (or "{N+}", as a client would send it).
func literalSize(line []byte) (int64, bool) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	digits := bytes.TrimSuffix(line[i+1:len(line)-1], []byte("+"))
	if len(digits) == 0 || len(digits) > 12 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// imapQuote quotes a string for IMAP.
func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// login logs in with LOGIN.
func (cl *imapClient) login(user, password string, timeout time.Duration) error {
	res, err := cl.command(timeout, "LOGIN %s %s", imapQuote(user), imapQuote(password))
	if err != nil {
		return fmt.Errorf("LOGIN: %w", err)
	}
	if res.status != "OK" {
		return fmt.Errorf("LOGIN: %s", res.text)
	}
	return nil
}

// logout sends LOGOUT and waits for the server to close the connection.
func (cl *imapClient) logout(timeout time.Duration) error {
	res, err := cl.command(timeout, "LOGOUT")
	if err == nil && res.status != "OK" {
		err = fmt.Errorf("LOGOUT: %s", res.text)
	}
	if err != nil {
		cl.Close()
		return err
	}
	io.Copy(io.Discard, cl.br)
	return cl.Close()
}

// pop3Client is a connection to a POP3 server.
type pop3Client struct {
	c  net.Conn
	br *bufio.Reader
}

// pop3Multi is what a multi-line POP3 response held.
type pop3Multi struct {
	lines int   // lines before the terminating "."
	bytes int64 // their bytes, CRLF included, dot-stuffing removed
	sizes int64 // for LIST: the sum of the sizes
}

var errPOP3 = errors.New("-ERR")

func dialPOP3(addr string, timeout time.Duration) (*pop3Client, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	cl := &pop3Client{c: c, br: bufio.NewReaderSize(c, mailConnBuffer)}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := cl.status(); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return cl, nil
}

func (cl *pop3Client) Close() error { return cl.c.Close() }

// status reads a status line: +OK, or an error for -ERR.
func (cl *pop3Client) status() (string, error) {
	line, err := cl.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "+OK") {
		return line, nil
	}
	return line, fmt.Errorf("%w: %q", errPOP3, line)
}

// simple sends a command and reads its status line.
func (cl *pop3Client) simple(timeout time.Duration, cmd string) (string, error) {
	cl.c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(cl.c, cmd+"\r\n"); err != nil {
		return "", err
	}
	verb, _, _ := strings.Cut(cmd, " ")
	line, err := cl.status()
	if err != nil {
		return line, fmt.Errorf("%s: %w", verb, err)
	}
	return line, nil
}

// multi sends a command whose answer is multi-line and reads it to the
// terminating line. With sizes, each line is "N SIZE" (LIST) and the
// sizes are added up.
func (cl *pop3Client) multi(timeout time.Duration, cmd string, sizes bool) (pop3Multi, error) {
	var m pop3Multi
	if _, err := cl.simple(timeout, cmd); err != nil {
		return m, err
	}
	lineStart := true
	for {
		line, err := cl.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return m, fmt.Errorf("%s: %w", cmd, err)
		}
		if lineStart {
			if len(line) > 0 && line[0] == '.' {
				if string(line) == ".\r\n" {
					return m, nil
				}
				line = line[1:] // dot-stuffed
			}
			m.lines++
			if sizes {
				if _, s, ok := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" ")); ok {
					n, _ := strconv.ParseInt(string(s), 10, 64)
					m.sizes += n
				}
			}
		}
		m.bytes += int64(len(line))
		lineStart = err == nil
	}
}

// quit sends QUIT and waits for the server to close the connection.
func (cl *pop3Client) quit(timeout time.Duration) error {
	_, err := cl.simple(timeout, "QUIT")
	if err != nil {
		cl.Close()
		return err
	}
	io.Copy(io.Discard, cl.br)
	return cl.Close()
}
