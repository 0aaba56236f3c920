package smtpd

import (
	"errors"
	"io"
)

// Errors found in message data.
var (
	// errBareLF is a line feed not preceded by a carriage return, or a
	// carriage return not followed by a line feed. RFC 5321 section
	// 2.3.8 forbids both; accepting them lets an attacker smuggle a second
	// message past a server that ends DATA differently (CVE-2023-51764).
	errBareLF = errors.New("smtpd: bare CR or LF in message data")
	// errTooManyHops is more Received headers than allowed: a mail loop
	// (RFC 5321 section 6.3).
	errTooManyHops = errors.New("smtpd: too many Received headers")
)

// dataReader checks message data as it streams from the SMTP layer (which
// has already removed dot-stuffing and stops at CRLF.CRLF): it fails at the
// first bare CR or LF, counts Received headers in the header section, and
// keeps the start of the message (the header, and maybe some body) for
// whoever needs to look at it without reading the spool file again.
type dataReader struct {
	r       io.Reader
	maxHops int

	prev     byte // last byte seen, 0 at the start
	inHeader bool
	header   []byte  // the header section as received, up to maxKeptHeader
	col      int     // bytes seen of the current line
	head     [9]byte // its first bytes, to spot "Received:"
	hops     int
	err      error // sticky
}

func newDataReader(r io.Reader, maxHops int) *dataReader {
	return &dataReader{r: r, maxHops: maxHops, inHeader: true}
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if cerr := d.check(p[:n]); cerr != nil {
		d.err = cerr
		return 0, cerr
	}
	if err == io.EOF && d.prev == '\r' {
		d.err = errBareLF
		return 0, d.err
	}
	return n, err
}

var received = [9]byte{'r', 'e', 'c', 'e', 'i', 'v', 'e', 'd', ':'}

// maxKeptHeader bounds how much of the header dataReader keeps.
const maxKeptHeader = 64 << 10

func (d *dataReader) check(p []byte) error {
	if d.inHeader && len(d.header) < maxKeptHeader {
		d.header = append(d.header, p[:min(len(p), maxKeptHeader-len(d.header))]...)
	}
	for _, c := range p {
		if d.prev == '\r' && c != '\n' || c == '\n' && d.prev != '\r' {
			return errBareLF
		}
		d.prev = c
		if !d.inHeader {
			continue
		}
		switch c {
		case '\r':
			continue
		case '\n':
			if d.col == 0 {
				d.inHeader = false // the empty line that ends the header
				continue
			}
			if d.col >= len(received) && d.head == received {
				d.hops++
				if d.hops > d.maxHops {
					return errTooManyHops
				}
			}
			d.col = 0
			continue
		}
		if d.col < len(d.head) {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			d.head[d.col] = c
		}
		d.col++
	}
	return nil
}
