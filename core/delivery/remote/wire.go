package remote

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"sync"
)

// maxLine is the longest line we send, without its CRLF (RFC 5321
// section 4.5.3.1.6).
const maxLine = 998

// readError is a failure to read the message, as opposed to a failure to
// send it.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

var dataBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeData writes a message as DATA content: every line ending becomes
// CRLF (a bare CR or LF included, so that none is ever sent), a line that
// starts with a dot gets another (RFC 5321 section 4.5.2), a line longer
// than 998 bytes is broken with CRLF and a space (as Postfix does: in a
// header that is folding, in a body it is the least damage), and the
// content ends with CRLF.CRLF. progress is called after each chunk, to
// extend the deadline of a long transfer.
func writeData(w *bufio.Writer, r io.Reader, progress func()) error {
	bp := dataBufs.Get().(*[]byte)
	defer dataBufs.Put(bp)
	buf := *bp
	col := 0    // bytes on the current output line
	cr := false // the previous input byte was a CR, already sent as CRLF
	var werr error
	write := func(b []byte) {
		if werr == nil {
			_, werr = w.Write(b)
		}
	}
	for {
		n, rerr := r.Read(buf)
		chunk := buf[:n]
		p := chunk
		// The next CR and the next LF in chunk (n: none), each found once:
		// IndexAny would rescan for both at every line.
		nextCR, nextLF := -1, -1
		next := func() int {
			base := n - len(p)
			if nextCR < base {
				nextCR = indexFrom(chunk, base, '\r')
			}
			if nextLF < base {
				nextLF = indexFrom(chunk, base, '\n')
			}
			if m := min(nextCR, nextLF); m < n {
				return m - base
			}
			return -1
		}
		for len(p) > 0 && werr == nil {
			if cr {
				cr = false
				if p[0] == '\n' {
					p = p[1:]
					continue
				}
			}
			i := next()
			seg := p
			if i >= 0 {
				seg = p[:i]
			}
			for len(seg) > 0 {
				if col == 0 && seg[0] == '.' {
					write(dot)
					col++
				}
				if col >= maxLine {
					write(fold)
					col = 1
				}
				k := min(maxLine-col, len(seg))
				write(seg[:k])
				col += k
				seg = seg[k:]
			}
			if i < 0 {
				break
			}
			write(crlf)
			col = 0
			cr = p[i] == '\r'
			p = p[i+1:]
		}
		if werr != nil {
			return werr
		}
		if progress != nil {
			progress()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &readError{rerr}
		}
	}
	if col > 0 {
		write(crlf)
	}
	write(dotCRLF)
	return werr
}

// indexFrom returns the index of c in b at or after from, or len(b).
func indexFrom(b []byte, from int, c byte) int {
	if i := bytes.IndexByte(b[from:], c); i >= 0 {
		return from + i
	}
	return len(b)
}

var (
	dot     = []byte(".")
	crlf    = []byte("\r\n")
	fold    = []byte("\r\n ")
	dotCRLF = []byte(".\r\n")
)

// tlsRoots holds the CAs that verify trusts.
type tlsRoots struct {
	pool *x509.CertPool // nil: the system's
}

func loadRoots(caFile string) (*tlsRoots, error) {
	if caFile == "" {
		return &tlsRoots{}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", caFile)
	}
	return &tlsRoots{pool: pool}, nil
}

// config returns the TLS configuration for a server named host. Without
// verify, any certificate is accepted: opportunistic encryption still
// defeats passive eavesdropping, and most MX certificates would fail.
func (t *tlsRoots) config(host string, verify bool) *tls.Config {
	return &tls.Config{
		ServerName:         host,
		RootCAs:            t.pool,
		InsecureSkipVerify: !verify,
	}
}
