package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/store"
)

// Expunge implements imapserver.Session (EXPUNGE, UID EXPUNGE and the
// expunge of CLOSE). The EXPUNGE responses reach the client through the
// tracker, when imapserver polls after the command; CLOSE drops them with
// the tracker. In a mailbox opened with EXAMINE nothing is removed.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	sel := s.sel
	if sel.readOnly {
		return nil
	}
	var list []uint32 // nil: every message
	if uids != nil {
		refs := s.resolve(*uids)
		if len(refs) == 0 {
			return nil
		}
		list = refUIDs(refs)
	}
	sel.om.mu.Lock()
	defer sel.om.mu.Unlock()
	removed, err := s.srv.opts.Store.ExpungeDeleted(sel.mb.ID, list)
	if err != nil {
		return s.storeErr("expunge", err)
	}
	sel.om.reconcileLocked(nil, nil)
	if len(removed) > 0 {
		s.log.Info("imap: expunged", "mailbox", sel.mb.Name, "messages", len(removed))
	}
	return nil
}

// Copy implements imapserver.Session (COPY, UID COPY, with COPYUID).
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	dst, err := s.target(dest)
	if err != nil {
		return nil, err
	}
	if s.starUnsure(numSet) {
		return nil, errExpungeIssued
	}
	refs := s.resolve(numSet)
	if len(refs) == 0 {
		return nil, nil
	}
	src, dstUIDs, err := s.srv.opts.Store.Copy(s.sel.mb.ID, refUIDs(refs), dst.ID)
	if err != nil {
		return nil, s.storeErr("copy", err)
	}
	if len(src) == 0 {
		return nil, nil
	}
	s.train(s.sel.mb, dst, dstUIDs)
	return &imap.CopyData{UIDValidity: dst.UIDValidity, SourceUIDs: uidSet(src), DestUIDs: uidSet(dstUIDs)}, nil
}

// Move implements imapserver.SessionMove (RFC 6851): COPYUID first, then
// the EXPUNGE responses, which come from the tracker when imapserver polls
// after the command.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	dst, err := s.target(dest)
	if err != nil {
		return err
	}
	if dst.ID == sel.mb.ID {
		return no(imap.ResponseCodeCannot, "Source and destination are the same mailbox")
	}
	if s.starUnsure(numSet) {
		return errExpungeIssued
	}
	refs := s.resolve(numSet)
	if len(refs) == 0 {
		return nil
	}
	var src, dstUIDs []uint32
	err = func() error {
		sel.om.mu.Lock()
		defer sel.om.mu.Unlock()
		var err error
		src, dstUIDs, err = s.srv.opts.Store.Move(sel.mb.ID, refUIDs(refs), dst.ID)
		if err == nil {
			sel.om.reconcileLocked(nil, nil)
		}
		return err
	}()
	if err != nil {
		return s.storeErr("move", err)
	}
	if len(src) == 0 {
		return nil
	}
	s.train(sel.mb, dst, dstUIDs)
	return w.WriteCopyData(&imap.CopyData{UIDValidity: dst.UIDValidity, SourceUIDs: uidSet(src), DestUIDs: uidSet(dstUIDs)})
}

// train queues the messages just copied or moved from src into dst (their
// UIDs in dst) for spam training: into \Junk as spam, out of \Junk (but not
// into \Trash) as ham.
func (s *session) train(src, dst store.Mailbox, uids []uint32) {
	const junk, trash = `\Junk`, `\Trash`
	if s.srv.lrn == nil || len(uids) == 0 {
		return
	}
	var spam bool
	switch {
	case dst.SpecialUse == junk && src.SpecialUse != junk:
		spam = true
	case src.SpecialUse == junk && dst.SpecialUse != junk && dst.SpecialUse != trash:
		spam = false
	default:
		return
	}
	msgs, err := s.srv.opts.Store.MessagesByUID(dst.ID, uids)
	if err != nil {
		s.log.Warn("imap: spam training: reading messages", "err", err)
		return
	}
	for _, m := range msgs {
		s.srv.lrn.enqueue(learnJob{user: s.user.Address, msg: m, spam: spam})
	}
}

// maxHeaderRead bounds the part of an appended message read ahead for its
// summary (store.ParseSummary reads no more either).
const maxHeaderRead = 256 << 10

// Append implements imapserver.Session (with APPENDUID). imapserver has
// checked the literal's size against AppendLimit before asking for it.
func (s *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	mb, err := s.target(mailbox)
	if err != nil {
		return nil, err
	}
	flags, err := storeFlags(options.Flags)
	if err != nil {
		return nil, err
	}
	size := r.Size()
	body := &exactReader{r: r, left: size}
	// The header, read ahead for the summary, then the rest.
	br := bufio.NewReaderSize(body, 32<<10)
	var head bytes.Buffer
	for head.Len() < maxHeaderRead {
		line, err := br.ReadSlice('\n')
		head.Write(line)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, s.appendErr(err)
		}
		if bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			break
		}
	}
	summary := store.ParseSummary(bytes.NewReader(head.Bytes()))
	date := options.Time
	if date.IsZero() {
		date = time.Now()
	}
	stored, msg, err := s.srv.opts.Store.Deliver(store.Delivery{
		UserID:       s.user.ID,
		Mailbox:      mb.Name,
		Body:         io.MultiReader(&head, br),
		Size:         size,
		InternalDate: date,
		Flags:        flags,
		Summary:      summary,
		Strict:       true,
		CheckQuota:   true,
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errTryCreate // deleted meanwhile
	}
	if err != nil {
		return nil, s.appendErr(err)
	}
	s.log.Info("imap: appended", "mailbox", mb.Name, "uid", msg.UID, "size", size)
	// The mailbox the message went into: if another session deleted and
	// recreated it since target, its UIDVALIDITY is not mb's.
	return &imap.AppendData{UID: imap.UID(msg.UID), UIDValidity: stored.UIDValidity}, nil
}

func (s *session) appendErr(err error) error {
	if errors.Is(err, errShortLiteral) {
		return err // the connection broke; nothing to tell
	}
	return s.storeErr("append", err)
}

var errShortLiteral = errors.New("imapd: literal ended early")

// exactReader reads exactly left bytes from r, and fails rather than end
// early: a literal cut short by a broken connection must not be stored as
// a shorter message.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) && e.left > 0 {
		return n, fmt.Errorf("%w: %d bytes missing", errShortLiteral, e.left)
	}
	if err == nil && e.left == 0 {
		err = io.EOF
	}
	return n, err
}
