package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/sluice-mail/sluice/sdk"
)

// header is a message header as the signer will see it.
type header struct {
	// raw is the header's bytes as read, up to and including the empty
	// line that ends it. A message that ends inside its header (it has no
	// body) gets the missing line ends here: the body is then empty, for
	// the signer as for a verifier.
	raw []byte
	// fields are the fields of raw, their values with folding kept, as
	// go-msgauth's signer picks them (the name is what precedes the
	// colon, less trailing white space).
	fields sdk.Header
}

// unparsable says why a header cannot be signed as it is. The message
// passes unsigned.
type unparsable string

func (u unparsable) Error() string { return string(u) }

var errLineTooLong = errors.New("line too long")

// readHeader reads the header from br, leaving br at the start of the
// body. The error is an unparsable for a header that cannot be signed
// (larger than sdk.MaxHeaderBytes or with more than sdk.MaxHeaderFields
// fields, a line that is not a field, a first line that is a
// continuation), or the error that reading met.
//
// The header is held in memory; go-msgauth's signer holds it too. It is
// bounded by sdk.MaxHeaderBytes.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	for {
		line, err := readLine(br, sdk.MaxHeaderBytes-len(h.raw))
		if errors.Is(err, errLineTooLong) {
			return nil, unparsable(fmt.Sprintf("header larger than %d bytes", sdk.MaxHeaderBytes))
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		h.raw = append(h.raw, line...)
		text := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		switch {
		case len(line) == 0:
			// The end of the message, in the header.
		case len(text) == 0:
			// The empty line; a CR alone at the very end counts as one.
			if line[len(line)-1] != '\n' {
				h.raw = append(h.raw, '\n')
			}
			return h, nil
		case text[0] == ' ' || text[0] == '\t':
			if len(h.fields) == 0 {
				return nil, unparsable("the header starts with a continuation line")
			}
			h.fields[len(h.fields)-1].Value += "\r\n" + string(text)
		default:
			i := bytes.IndexByte(text, ':')
			if i < 0 {
				return nil, unparsable("a header line that is not a field")
			}
			name := bytes.TrimRight(text[:i], " \t")
			if len(name) == 0 || !printable(name) {
				return nil, unparsable(fmt.Sprintf("a header field with a bad name %q", name))
			}
			if len(h.fields) >= sdk.MaxHeaderFields {
				return nil, unparsable(fmt.Sprintf("more than %d header fields", sdk.MaxHeaderFields))
			}
			h.fields = append(h.fields, sdk.HeaderField{Name: string(name), Value: string(bytes.TrimPrefix(text[i+1:], []byte(" ")))})
		}
		if err == io.EOF {
			if len(line) > 0 && line[len(line)-1] != '\n' {
				h.raw = append(h.raw, "\r\n"...)
			}
			h.raw = append(h.raw, "\r\n"...)
			return h, nil
		}
	}
}

// readLine reads one line, its LF included, or what is left before the
// end of the message. A line longer than max is errLineTooLong.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		if len(line)+len(part) > max {
			return nil, errLineTooLong
		}
		line = append(line, part...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// printable reports whether a field name has only the characters RFC 5322
// section 2.2 allows: printable US-ASCII other than the colon.
func printable(name []byte) bool {
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}
