package mailauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/sluice-mail/sluice/sdk"
)

// DefaultMaxSignatures is how many DKIM signatures are verified when the
// configuration says nothing. Each one costs a DNS lookup and a hash of
// the body, so a message cannot make us do unbounded work.
const DefaultMaxSignatures = 5

// DKIMResult is the result of verifying one DKIM signature.
type DKIMResult struct {
	// Result is Pass, Fail, Policy, Neutral, TempError or PermError
	// (RFC 8601 section 2.7.1).
	Result string
	// Domain (d=) is normalized when it is a valid domain, as written
	// otherwise; only a Pass result's Domain is worth anything.
	Domain     string
	Selector   string // s=
	Algorithm  string // a=
	Identifier string // i=, "" when absent
	// Signature is the start of b=, to tell signatures of the same domain
	// apart (RFC 6008).
	Signature string
	// Reason says why the signature did not pass, for the log.
	Reason string
}

// Reasons of DKIM results that this package decides rather than the
// verifier.
const (
	ReasonBodyLength = "body length limit (l=) not accepted: content past it is unsigned"
	reasonTooLarge   = "message header too large"
	reasonOutOfTime  = "verification ran out of time"
)

var requiredDKIMTags = []string{"v", "a", "b", "bh", "d", "h", "s"}

// VerifyDKIM verifies the DKIM signatures of a message (RFC 6376 section
// 6) whose header is h and whose whole text data reads, and returns one
// result per signature, in header order. At most max signatures are
// verified (DefaultMaxSignatures when max <= 0); unverified says how many
// were left. A message without signatures gives no results and is not
// read at all.
//
// A signature with a body length limit (l=) is never a pass (docs/security.md:
// content past l= is unsigned, and anyone could have appended it): its
// result is Policy with ReasonBodyLength. A DNS failure is TempError; a
// missing or revoked key, a bad key record or an expired signature is
// PermError; a signature that is syntactically broken is Neutral.
//
// The error is not nil only when data could not be read: the filter
// failed, not the message.
func VerifyDKIM(ctx context.Context, r *Resolver, h sdk.Header, data io.Reader, max int) (results []DKIMResult, unverified int, err error) {
	if max <= 0 {
		max = DefaultMaxSignatures
	}
	var fields []string
	for _, f := range h {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			fields = append(fields, sdk.Unfold(f.Value))
		}
	}
	if len(fields) == 0 {
		return nil, 0, nil
	}
	if len(fields) > max {
		unverified = len(fields) - max
		fields = fields[:max]
	}
	ctx, cancel := Budget(ctx, MaxCheckTime)
	defer cancel()
	g := &guardReader{ctx: ctx, r: data, inHeader: true, empty: true}
	verifs, verr := dkim.VerifyWithOptions(g, &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return r.LookupTXT(ctx, name) },
		MaxVerifications: max,
	})
	if g.err != nil {
		return nil, 0, fmt.Errorf("mailauth: reading the message: %w", g.err)
	}
	results = make([]DKIMResult, len(fields))
	for i, f := range fields {
		tags, terr := ParseTags(f)
		res := &results[i]
		res.fill(tags)
		switch {
		case g.tooLarge:
			res.Result, res.Reason = PermError, reasonTooLarge
		case g.ctxErr != nil:
			res.Result, res.Reason = TempError, reasonOutOfTime
		case verr != nil && !errors.Is(verr, dkim.ErrTooManySignatures) || i >= len(verifs):
			res.Result, res.Reason = PermError, fmt.Sprintf("malformed message: %v", verr)
		default:
			res.classify(tags, terr, verifs[i])
		}
	}
	return results, unverified, nil
}

// fill sets the identifying fields from the signature's tags.
func (res *DKIMResult) fill(tags map[string]string) {
	d := stripSpace(tags["d"])
	if nd, err := NormalizeDomain(d); err == nil {
		d = nd
	}
	res.Domain = d
	res.Selector = stripSpace(tags["s"])
	res.Algorithm = stripSpace(tags["a"])
	res.Identifier = stripSpace(tags["i"])
	if b := stripSpace(tags["b"]); len(b) > 8 {
		res.Signature = b[:8]
	} else {
		res.Signature = b
	}
}

// classify turns the verifier's outcome into a result. Our own parse of
// the signature must agree with the verifier's for a pass: a signature we
// cannot read, or that the verifier read with another d=, is Neutral.
func (res *DKIMResult) classify(tags map[string]string, terr error, v *dkim.Verification) {
	if terr != nil {
		res.Result, res.Reason = Neutral, "malformed signature: "+strings.TrimPrefix(terr.Error(), "mailauth: ")
		return
	}
	for _, t := range requiredDKIMTags {
		if _, ok := tags[t]; !ok {
			res.Result, res.Reason = Neutral, "malformed signature: no "+t+"= tag"
			return
		}
	}
	if tags["v"] != "1" {
		res.Result, res.Reason = Neutral, "unknown signature version"
		return
	}
	if _, err := NormalizeDomain(res.Domain); err != nil {
		res.Result, res.Reason = Neutral, "malformed signature: bad d= domain"
		return
	}
	if v == nil || !strings.EqualFold(v.Domain, stripSpace(tags["d"])) {
		res.Result, res.Reason = Neutral, "signature not matched to its verification"
		return
	}
	_, hasLength := tags["l"]
	switch {
	case hasLength && (v.Err == nil || !dkim.IsTempFail(v.Err) && !dkim.IsPermFail(v.Err)):
		// go-msgauth refuses any l= (as a failure, after fetching the key);
		// ours is a policy decision, whatever the rest of the signature.
		res.Result, res.Reason = Policy, ReasonBodyLength
	case v.Err == nil:
		res.Result = Pass
	case dkim.IsTempFail(v.Err):
		res.Result, res.Reason = TempError, strings.TrimPrefix(v.Err.Error(), "dkim: ")
	case dkim.IsPermFail(v.Err):
		res.Result, res.Reason = PermError, strings.TrimPrefix(v.Err.Error(), "dkim: ")
	default:
		res.Result, res.Reason = Fail, strings.TrimPrefix(v.Err.Error(), "dkim: ")
	}
}

// AuthResult returns r as an Authentication-Results entry, such as
// dkim=pass header.d=example.org header.s=sel header.a=rsa-sha256
// header.b=abcdefgh (RFC 8601 section 2.7.1, RFC 6008).
func (r DKIMResult) AuthResult() sdk.AuthResult {
	ar := sdk.AuthResult{Method: "dkim", Result: r.Result, Reason: r.Reason}
	for _, p := range []struct{ name, value string }{
		{"d", r.Domain}, {"i", r.Identifier}, {"s", r.Selector}, {"a", r.Algorithm}, {"b", r.Signature},
	} {
		if p.value != "" {
			ar.Properties = append(ar.Properties, prop("header", p.name, p.value))
		}
	}
	return ar
}

// guardReader feeds the message to the verifier. It stops the header at
// sdk.MaxHeaderBytes (go-msgauth reads the header whole, however long),
// ends a message that has no body and no empty line after its header
// with one (go-msgauth cannot read it otherwise; RFC 5322 section 3.5
// allows it), and stops early when ctx ends. It never passes a read error
// on: go-msgauth leaks its goroutines when the body it copies to them
// fails, so an error is kept here and the verifier sees the end of the
// message instead.
type guardReader struct {
	ctx      context.Context
	r        io.Reader
	inHeader bool
	empty    bool // the current header line has had nothing but CR so far
	n        int  // header bytes so far
	tail     string
	err      error
	ctxErr   error
	tooLarge bool
}

func (g *guardReader) Read(p []byte) (int, error) {
	if g.tail != "" {
		n := copy(p, g.tail)
		g.tail = g.tail[n:]
		return n, nil
	}
	if g.err != nil || g.ctxErr != nil || g.tooLarge {
		return 0, io.EOF
	}
	if err := g.ctx.Err(); err != nil {
		g.ctxErr = err
		return 0, io.EOF
	}
	n, err := g.r.Read(p)
	if g.inHeader {
		for _, c := range p[:n] {
			if g.n++; g.n > sdk.MaxHeaderBytes {
				g.tooLarge = true
				return 0, io.EOF
			}
			switch c {
			case '\n':
				if g.empty {
					g.inHeader = false
				}
				g.empty = true
			case '\r':
			default:
				g.empty = false
			}
			if !g.inHeader {
				break
			}
		}
	}
	if err != nil && err != io.EOF {
		g.err = err
		err = io.EOF
	}
	if err == io.EOF && g.inHeader {
		g.inHeader, err = false, nil
		if g.tail = "\r\n\r\n"; g.empty {
			g.tail = "\r\n"
		}
	}
	return n, err
}
