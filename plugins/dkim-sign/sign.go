package main

import (
	"bufio"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth"
	"github.com/sluice-mail/sluice/sdk"
)

// filter signs outbound messages (doc.go). Check runs concurrently;
// Configure replaces the keys whole.
type filter struct {
	keys atomic.Pointer[keyring] // nil until Configure succeeds
}

func newFilter() *filter { return &filter{} }

// Symbols, each with score 0: signing is not an opinion about the message.
const (
	symSigned      = "DKIM_SIGNED"
	symNoKey       = "DKIM_SIGN_NO_KEY"
	symBadFrom     = "DKIM_SIGN_BAD_FROM"
	symUnparsable  = "DKIM_SIGN_UNPARSABLE"
	symFailed      = "DKIM_SIGN_FAILED"
	symNotOutbound = "DKIM_SIGN_NOT_OUTBOUND"
)

// Reasons, for Sluice's log and the message trace.
const (
	reasonSigned      = "signed"
	reasonNoKey       = "no-key"
	reasonBadFrom     = "bad-from"
	reasonUnparsable  = "unparsable"
	reasonFailed      = "sign-failed"
	reasonNotOutbound = "not-outbound"
)

// pipelineOutbound is the only pipeline whose mail is signed.
const pipelineOutbound = "outbound"

// overSigned are listed in h= once more than the message has them, so
// that a copy added on the way breaks the signature (docs/security.md, RFC
// 6376 section 8.15); a missing one is listed once, so that it cannot be
// added either.
var overSigned = []string{"From", "To", "Subject", "Date", "Message-ID"}

// signedWhenPresent are listed as often as the message has them (RFC 6376
// section 5.4.1).
var signedWhenPresent = []string{"Reply-To", "Cc", "In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// maxInstances bounds the copies of one signed field: RFC 5322 section
// 3.6 allows one of each, and h= must stay a reasonable length.
const maxInstances = 5

// readBuffer is the size of the buffer the message is read through.
const readBuffer = 32 << 10

// ConfigSpec implements sdk.ConfigDocumenter.
func (f *filter) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (f *filter) Describe() (name, version string) { return "dkim-sign", "1.0.0" }

// Configure implements sdk.Filter: it reads and checks every key, and
// keeps the old keys when one is wrong.
func (f *filter) Configure(_ context.Context, c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return fmt.Errorf("dkim-sign: %w", err)
	}
	kr, err := load(c.Stage, cfg)
	if err != nil {
		return err
	}
	f.keys.Store(kr)
	return nil
}

// Check implements sdk.Filter. It reads the message only when its From
// domain has a key. The error is not nil only when the message could not
// be read or ctx ended: a message that cannot be signed passes unsigned.
func (f *filter) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	kr := f.keys.Load()
	if kr == nil {
		return sdk.Verdict{}, errors.New("dkim-sign: not configured")
	}
	if msg.Pipeline != pipelineOutbound {
		return unsigned(symNotOutbound, reasonNotOutbound, fmt.Sprintf("pipeline %q is not signed", msg.Pipeline)), nil
	}
	// A first look at the header Sluice parsed, so that mail from
	// domains without a key is not read at all.
	if v, _, ok := lookUp(kr, msg.Header); !ok {
		return v, nil
	}
	// The header as it is in the data decides: it is what is signed.
	src := &source{ctx: ctx, r: msg.Data}
	br := bufio.NewReaderSize(src, readBuffer)
	hdr, err := readHeader(br)
	if src.err != nil {
		return sdk.Verdict{}, fmt.Errorf("dkim-sign: %w", src.err)
	}
	var bad unparsable
	if errors.As(err, &bad) {
		return unsigned(symUnparsable, reasonUnparsable, string(bad)), nil
	}
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("dkim-sign: reading the message: %w", err)
	}
	v, keys, ok := lookUp(kr, hdr.fields)
	if !ok {
		return v, nil
	}
	names, err := signedFields(hdr.fields)
	if err != nil {
		return unsigned(symUnparsable, reasonUnparsable, err.Error()), nil
	}
	values, err := sign(keys, names, hdr.raw, br)
	if src.err != nil {
		return sdk.Verdict{}, fmt.Errorf("dkim-sign: %w", src.err)
	}
	if err != nil {
		return unsigned(symFailed, reasonFailed, strings.TrimPrefix(err.Error(), "dkim: ")), nil
	}
	v = sdk.Verdict{Action: sdk.Continue}
	var done []string
	for i, k := range keys {
		v.AddHeaders = append(v.AddHeaders, sdk.HeaderField{Name: "DKIM-Signature", Value: values[i]})
		detail := "d=" + k.domain + " s=" + k.selector + " a=" + k.algorithm
		v.Symbols = append(v.Symbols, sdk.Symbol{Name: symSigned, Detail: detail})
		done = append(done, detail)
	}
	v.Reason = reasonSigned + ": " + strings.Join(done, ", ")
	return v, nil
}

// lookUp finds the keys for the From domain of h. When there are none, ok
// is false and v is the verdict to return.
func lookUp(kr *keyring, h sdk.Header) (v sdk.Verdict, keys []*key, ok bool) {
	domain, result, why := mailauth.FromDomain(h)
	if result != "" {
		return unsigned(symBadFrom, reasonBadFrom, why), nil, false
	}
	keys = kr.keysFor(domain)
	if len(keys) == 0 {
		return unsigned(symNoKey, reasonNoKey, domain), nil, false
	}
	return sdk.Verdict{}, keys, true
}

// unsigned is the verdict for a message that passes without a signature.
func unsigned(symbol, reason, detail string) sdk.Verdict {
	return sdk.Verdict{
		Action:  sdk.Continue,
		Reason:  reason + ": " + detail + " (not signed)",
		Symbols: []sdk.Symbol{{Name: symbol, Detail: detail}},
	}
}

// signedFields returns h= for a message with header h: the over-signed
// fields, then the others it has (see overSigned and signedWhenPresent).
// Received is never among them.
func signedFields(h sdk.Header) ([]string, error) {
	var names []string
	add := func(name string, extra int) error {
		n := 0
		for _, f := range h {
			if strings.EqualFold(f.Name, name) {
				n++
			}
		}
		if n > maxInstances {
			return fmt.Errorf("%d %s fields", n, name)
		}
		for i := 0; i < n+extra; i++ {
			names = append(names, name)
		}
		return nil
	}
	for _, name := range overSigned {
		if err := add(name, 1); err != nil {
			return nil, err
		}
	}
	for _, name := range signedWhenPresent {
		if err := add(name, 0); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// sign signs the message whose header is hdr (up to and including the
// empty line) and whose body body reads, with each key, and returns the
// DKIM-Signature values in key order. The body streams through the
// signers, which hash it as it comes: it is never held in memory.
func sign(keys []*key, names []string, hdr []byte, body io.Reader) ([]string, error) {
	signers := make([]*dkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	var err error
	for _, k := range keys {
		var s *dkim.Signer
		s, err = dkim.NewSigner(&dkim.SignOptions{
			Domain: k.domain, Selector: k.selector, Signer: k.signer, Hash: crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             names,
		})
		if err != nil {
			break
		}
		signers = append(signers, s)
		writers = append(writers, s)
	}
	if err == nil {
		w := io.MultiWriter(writers...)
		if _, err = w.Write(hdr); err == nil {
			_, err = io.Copy(w, body)
		}
	}
	// Every signer is closed, whatever happened: Close ends its
	// goroutine.
	for _, s := range signers {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, err
	}
	values := make([]string, len(signers))
	for i, s := range signers {
		if values[i], err = fieldValue(s.Signature()); err != nil {
			return nil, err
		}
	}
	return values, nil
}

// fieldValue turns go-msgauth's whole field ("DKIM-Signature: a=...;\r\n
// b=...\r\n", folded with CRLF and a space) into the value Sluice puts
// after "DKIM-Signature: ": no leading space, no final CRLF, folded with
// CRLF and a tab. Under relaxed header canonicalization (RFC 6376 section
// 3.4.2) a space and a tab after a fold are the same, so the signature
// still holds. The result has no CR or LF other than in CRLF TAB.
func fieldValue(field string) (string, error) {
	name, value, ok := strings.Cut(field, ":")
	if !ok || !strings.EqualFold(name, "DKIM-Signature") {
		return "", fmt.Errorf("dkim-sign: unexpected signature field %q", field)
	}
	value = strings.TrimLeft(strings.TrimSuffix(value, "\r\n"), " ")
	value = strings.ReplaceAll(value, "\r\n ", "\r\n\t")
	for i := 0; i < len(value); i++ {
		switch value[i] {
		case '\r':
			if i+2 >= len(value) || value[i+1] != '\n' || value[i+2] != '\t' {
				return "", errors.New("dkim-sign: the signature field has a line break that is not folding")
			}
			i += 2
		case '\n', 0:
			return "", errors.New("dkim-sign: the signature field has a bare LF or a NUL")
		}
	}
	return value, nil
}

// source reads the message for the filter: it stops when ctx ends and
// keeps the first read error, so that Check can tell the message's fault
// (unsigned) from a failure to read it (an error).
type source struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.r == nil {
		return 0, io.EOF
	}
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = fmt.Errorf("reading the message: %w", err)
		return n, s.err
	}
	return n, err
}

var (
	_ sdk.Filter    = (*filter)(nil)
	_ sdk.Describer = (*filter)(nil)
)
