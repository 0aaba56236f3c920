package imapd

import (
	"io"
	"os"
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/core/store"
)

// Fetch implements imapserver.Session. Flags, dates, sizes and, for
// messages stored with one, the envelope come from the message record;
// only body structure and body sections (and the envelope of older
// messages) open the message file. A fetch of a body section without PEEK
// sets \Seen (not in a mailbox opened with EXAMINE), and the FETCH
// response then carries FLAGS.
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if s.starUnsure(numSet) {
		return errExpungeIssued
	}
	sel := s.sel
	markSeen := false
	if !sel.readOnly {
		for _, bs := range options.BodySection {
			markSeen = markSeen || !bs.Peek
		}
		for _, bs := range options.BinarySection {
			markSeen = markSeen || !bs.Peek
		}
	}
	seenNow := map[uint32]bool{} // \Seen set by this FETCH
	envs := map[uint32]*imap.Envelope{}
	load := func(uids []uint32) ([]store.Message, error) {
		// The records come from the registry's view, not the store: a
		// listing of a large mailbox decodes nothing.
		msgs, es := sel.om.records(uids, options.Envelope)
		clear(envs)
		for i, e := range es {
			if e != nil {
				envs[msgs[i].UID] = e
			}
		}
		if !markSeen {
			return msgs, nil
		}
		var unseen []uint32
		for _, m := range msgs {
			if !slices.Contains(m.Flags, store.FlagSeen) {
				unseen = append(unseen, m.UID)
			}
		}
		if len(unseen) == 0 {
			return msgs, nil
		}
		updated, err := s.setFlags(unseen, store.FlagsAdd, []string{store.FlagSeen})
		if err != nil {
			return nil, err
		}
		k := 0
		for i := range msgs {
			for k < len(updated) && updated[k].UID < msgs[i].UID {
				k++
			}
			if k < len(updated) && updated[k].UID == msgs[i].UID {
				msgs[i] = updated[k]
				seenNow[msgs[i].UID] = true
			}
		}
		return msgs, nil
	}
	return s.eachMessage(s.resolve(numSet), load, func(seq uint32, m store.Message) error {
		return s.fetchOne(w, seq, m, envs[m.UID], options, seenNow[m.UID])
	})
}

// eachMessage calls fn with each message of refs that load returns, and
// its sequence number. load gets the UIDs of up to fetchChunk refs at a
// time and returns their messages in UID order, leaving out those that no
// longer exist.
func (s *session) eachMessage(refs []msgRef, load func(uids []uint32) ([]store.Message, error), fn func(seq uint32, m store.Message) error) error {
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), fetchChunk)]
		refs = refs[len(chunk):]
		msgs, err := load(refUIDs(chunk))
		if err != nil {
			return err
		}
		j := 0
		for _, m := range msgs {
			for j < len(chunk) && chunk[j].uid < m.UID {
				j++
			}
			if j == len(chunk) {
				break
			}
			if chunk[j].uid != m.UID {
				continue
			}
			if err := fn(chunk[j].seq, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// setFlags changes flags of messages of the selected mailbox and queues
// the change to the other sessions; this session reports it itself (or,
// with STORE .SILENT, not at all).
func (s *session) setFlags(uids []uint32, op store.FlagOp, flags []string) ([]store.Message, error) {
	sel := s.sel
	sel.om.mu.Lock()
	defer sel.om.mu.Unlock()
	updated, err := s.srv.opts.Store.SetFlags(sel.mb.ID, uids, op, flags)
	if err != nil {
		return nil, s.storeErr("store", err)
	}
	reported := make(map[uint32]uint64, len(updated))
	for _, m := range updated {
		reported[m.UID] = m.ModSeq
	}
	sel.om.reconcileLocked(sel.t, reported)
	return updated, nil
}

// needsFile reports whether a fetch of m needs its file.
func needsFile(m store.Message, o *imap.FetchOptions) bool {
	return o.BodyStructure != nil || len(o.BodySection) > 0 || len(o.BinarySection) > 0 ||
		len(o.BinarySectionSize) > 0 || (o.Envelope && m.Envelope == nil)
}

// fetchOne writes the FETCH response of one message; env is its parsed
// ENVELOPE when the caller has it.
func (s *session) fetchOne(w *imapserver.FetchWriter, seq uint32, m store.Message, env *imap.Envelope, o *imap.FetchOptions, flagsChanged bool) error {
	var f *os.File
	if needsFile(m, o) {
		var err error
		if f, err = s.srv.opts.Store.OpenMessage(m); err != nil {
			// The record outlived its file: nothing can be sent for it.
			s.log.Error("imap: opening message", "mailbox_id", s.sel.mb.ID, "uid", m.UID, "err", err)
			return nil
		}
		defer f.Close()
	}
	// Everything but a copy of the file reads it through a view (see
	// viewLimits). A message cut down is logged, once per FETCH of it.
	var views []*mimelimit.View
	body := func() io.Reader {
		v := s.view(io.NewSectionReader(f, 0, m.Size))
		views = append(views, v)
		return v
	}
	defer func() {
		if slices.ContainsFunc(views, (*mimelimit.View).Truncated) {
			s.log.Warn("imap: message past the header or MIME limits read cut down", "mailbox_id", s.sel.mb.ID, "uid", m.UID)
		}
	}()

	rw := w.CreateMessage(seq)
	if o.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if o.Flags || flagsChanged {
		rw.WriteFlags(imapFlags(m.Flags))
	}
	if o.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if o.Envelope {
		if env == nil {
			env = envelope(m, body)
		}
		rw.WriteEnvelope(env)
	}
	if o.BodyStructure != nil {
		rw.WriteBodyStructure(bodyStructure(body()))
	}
	for _, bs := range o.BodySection {
		if err := writeBodySection(rw, bs, f, m.Size, body); err != nil {
			return err
		}
	}
	for _, bs := range o.BinarySection {
		data := imapserver.ExtractBinarySection(body(), bs)
		if err := writeLiteral(rw.WriteBinarySection(bs, int64(len(data))), data); err != nil {
			return err
		}
	}
	for _, bss := range o.BinarySectionSize {
		rw.WriteBinarySectionSize(bss, imapserver.ExtractBinarySectionSize(body(), bss))
	}
	return rw.Close()
}

// writeBodySection writes BODY[...]: the whole message, or a byte range of
// it, is copied from the file; other sections are cut out by imapserver.
func writeBodySection(rw *imapserver.FetchResponseWriter, bs *imap.FetchItemBodySection, f *os.File, size int64, body func() io.Reader) error {
	if len(bs.Part) == 0 && bs.Specifier == imap.PartSpecifierNone && len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0 {
		off, n := int64(0), size
		if p := bs.Partial; p != nil {
			off = min(p.Offset, size)
			n = min(p.Size, size-off)
		}
		wc := rw.WriteBodySection(bs, n)
		_, err := io.Copy(wc, io.NewSectionReader(f, off, n))
		if cerr := wc.Close(); err == nil {
			err = cerr
		}
		return err
	}
	data := imapserver.ExtractBodySection(body(), bs)
	return writeLiteral(rw.WriteBodySection(bs, int64(len(data))), data)
}

func writeLiteral(wc io.WriteCloser, data []byte) error {
	_, err := wc.Write(data)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

// envelope returns a message's ENVELOPE: from the header fields kept in its
// record when there are, from its file otherwise.
func envelope(m store.Message, body func() io.Reader) *imap.Envelope {
	if m.Envelope != nil {
		return envelopeOf(m.Envelope)
	}
	h, ok := readHeader(body())
	if !ok {
		return &imap.Envelope{}
	}
	return imapserver.ExtractEnvelope(h)
}

// envelopeOf parses the header fields of an ENVELOPE kept in a record.
func envelopeOf(e *store.Envelope) *imap.Envelope {
	var h textproto.Header
	for _, kv := range e.Fields() {
		h.Add(kv[0], kv[1])
	}
	return imapserver.ExtractEnvelope(h)
}

// Store implements imapserver.Session (STORE and UID STORE, with .SILENT).
// The new flags of every message in the set are sent back unless the
// command is silent; other sessions get them as unsolicited FETCH.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	fl, err := storeFlags(flags.Flags)
	if err != nil {
		return err
	}
	var op store.FlagOp
	switch flags.Op {
	case imap.StoreFlagsSet:
		op = store.FlagsReplace
	case imap.StoreFlagsAdd:
		op = store.FlagsAdd
	default:
		op = store.FlagsRemove
	}
	if s.starUnsure(numSet) {
		return errExpungeIssued
	}
	_, isUID := numSet.(imap.UIDSet)
	load := func(uids []uint32) ([]store.Message, error) { return s.setFlags(uids, op, fl) }
	return s.eachMessage(s.resolve(numSet), load, func(seq uint32, m store.Message) error {
		if flags.Silent {
			return nil
		}
		rw := w.CreateMessage(seq)
		if isUID {
			rw.WriteUID(imap.UID(m.UID))
		}
		rw.WriteFlags(imapFlags(m.Flags))
		return rw.Close()
	})
}
