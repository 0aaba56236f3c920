package smtpd

import (
	"bytes"
	"errors"
	"io"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/mimelimit"
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
	// errTooLongLine is a line of message data longer than
	// smtp.max_line_length. go-smtp's reader enforces that limit on the
	// lines of DATA (as smtp.ErrTooLongLine) but not on BDAT chunks, whose
	// message is still a message of RFC 5322 lines unless BINARYMIME is
	// offered (it is not): dataReader applies it to both, so that the same
	// message gets the same answer however it is sent.
	errTooLongLine = errors.New("smtpd: line too long in message data")
	// errMalformedHeader is a header section that starts with white space
	// (its first line would continue the Received field Sluice puts on
	// top) or has a line that is neither a field (RFC 5322 section 2.2,
	// with the white space before the colon of section 4.5) nor a
	// continuation. Mail programs read such a header differently: one
	// sees a From field that the filters, which stop at the odd line,
	// never saw.
	errMalformedHeader = errors.New("smtpd: malformed header section")
)

// dataReader checks message data as it streams from the SMTP layer (which
// has already removed dot-stuffing and stops at CRLF.CRLF): it fails at the
// first bare CR or LF, counts Received headers in the header section,
// refuses a malformed header section (errMalformedHeader), checks the shape of the message against the header and MIME limits (see
// shapeLimits), and keeps the start of the message (the header, and maybe
// some body) for whoever needs to look at it without reading the spool
// file again.
type dataReader struct {
	r       io.Reader
	maxHops int
	maxLine int                // the longest line, with its CRLF (0: no limit)
	shape   *mimelimit.Checker // nil: no header or MIME limits

	prev     byte // last byte seen, 0 at the start
	lineLen  int  // bytes of the current line so far
	inHeader bool
	header   []byte  // the header section as received, up to maxKeptHeader
	col      int     // bytes seen of the current line
	head     [9]byte // its first bytes, to spot "Received:"
	field    int     // where the current header line is: one of the line* values
	lines    int     // header lines ended so far
	hops     int
	err      error // sticky
}

// newDataReader returns a dataReader of r; shape, when not nil, are the
// header and MIME limits.
func newDataReader(r io.Reader, maxHops int, shape *mimelimit.Limits) *dataReader {
	d := &dataReader{r: r, maxHops: maxHops, inHeader: true}
	if shape != nil {
		d.shape = mimelimit.NewChecker(*shape)
	}
	return d
}

// Where dataReader is in a header line.
const (
	lineName  = iota // in the field name (or at the start of the line)
	lineSpace        // in white space after the field name
	lineOK           // past the colon, or in a continuation line
)

// shapeReply is the reply to a message refused by a header or MIME limit
// (the error of dataReader), or nil for another error. Header limits are
// 552 5.3.4, like a message too big; MIME limits are 554 5.6.0, a media
// error (RFC 3463).
func shapeReply(err error) *smtp.SMTPError {
	switch {
	case errors.Is(err, mimelimit.ErrHeaderBytes):
		return reply(552, 5, 3, 4, "Message header too large")
	case errors.Is(err, mimelimit.ErrHeaderFields):
		return reply(552, 5, 3, 4, "Too many header fields")
	case errors.Is(err, mimelimit.ErrFieldLength):
		return reply(552, 5, 3, 4, "Header field too long")
	case errors.Is(err, mimelimit.ErrDepth):
		return reply(554, 5, 6, 0, "MIME parts nested too deeply")
	case errors.Is(err, mimelimit.ErrParts):
		return reply(554, 5, 6, 0, "Too many MIME parts")
	}
	return nil
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
	if err == io.EOF && d.inHeader && d.col > 0 && d.field != lineOK {
		// A last header line, without a line end, that is not a field.
		d.err = errMalformedHeader
		return 0, d.err
	}
	if err == io.EOF && d.shape != nil {
		if cerr := d.shape.Close(); cerr != nil {
			d.err = cerr
			return 0, cerr
		}
	}
	return n, err
}

// headerByte follows c, a byte of a header line other than its line end,
// through the line's syntax: a field name of printable ASCII but the
// colon, maybe white space, then the colon; or a continuation line, which
// starts with white space and may not be the first line.
func (d *dataReader) headerByte(c byte) error {
	wsp := c == ' ' || c == '\t'
	switch {
	case d.field == lineOK:
		return nil
	case d.col == 0 && wsp:
		if d.lines == 0 {
			return errMalformedHeader
		}
		d.field = lineOK
	case c == ':' && d.col > 0:
		d.field = lineOK
	case wsp && d.col > 0:
		d.field = lineSpace
	case d.field == lineName && c > ' ' && c < 0x7f && c != ':':
	default:
		return errMalformedHeader
	}
	return nil
}

var received = [9]byte{'r', 'e', 'c', 'e', 'i', 'v', 'e', 'd', ':'}

// maxKeptHeader bounds how much of the header dataReader keeps.
const maxKeptHeader = 64 << 10

// keptHeader returns the start of the message that dataReader kept, for
// the readers of its header (package header): when it is cut, its last
// line, cut too, is left out, so that no reader takes the start of a line
// for a whole field.
func (d *dataReader) keptHeader() []byte {
	if len(d.header) < maxKeptHeader {
		return d.header
	}
	return d.header[:bytes.LastIndexByte(d.header, '\n')+1]
}

func (d *dataReader) check(p []byte) error {
	if d.inHeader && len(d.header) < maxKeptHeader {
		d.header = append(d.header, p[:min(len(p), maxKeptHeader-len(d.header))]...)
	}
	for _, c := range p {
		if d.prev == '\r' && c != '\n' || c == '\n' && d.prev != '\r' {
			return errBareLF
		}
		d.prev = c
		if d.lineLen++; d.maxLine > 0 && d.lineLen > d.maxLine {
			return errTooLongLine
		}
		if c == '\n' {
			d.lineLen = 0
		}
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
			if d.field != lineOK {
				return errMalformedHeader // a name without a colon
			}
			if d.col >= len(received) && d.head == received {
				d.hops++
				if d.hops > d.maxHops {
					return errTooManyHops
				}
			}
			d.col, d.field = 0, lineName
			d.lines++
			continue
		}
		if err := d.headerByte(c); err != nil {
			return err
		}
		if d.col < len(d.head) {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			d.head[d.col] = c
		}
		d.col++
	}
	// The shape is checked after the bytes: a bare CR or LF (which
	// closes the connection) comes first.
	if d.shape != nil {
		if _, err := d.shape.Write(p); err != nil {
			return err
		}
	}
	return nil
}
