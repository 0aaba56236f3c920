package imapd

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/store"
)

// Bounds on what one user or command may ask for.
const (
	maxMailboxes    = 1000 // per user; CREATE beyond it gets NO [LIMIT]
	maxListPatterns = 16   // patterns in one LIST
	maxPatternLen   = 1024 // bytes in a LIST reference or pattern
	maxStoreFlags   = 64   // flags in one STORE or APPEND
	fetchChunk      = 500  // message records read from the store at once
	loginTimeout    = 30 * time.Second
	// loginBudget bounds the time from connecting to logging in:
	// imapserver's 30-second limit applies to each command, so without it
	// a client could hold a connection by sending NOOP every 29 seconds.
	loginBudget = 3 * time.Minute
)

// session is one IMAP connection. imapserver calls its methods from the
// connection's goroutine, one command at a time; only bye comes from
// elsewhere.
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	remote netip.Addr

	user      *store.User // nil until logged in
	log       *slog.Logger
	sel       *selected
	searchRes imap.UIDSet // SEARCH RETURN (SAVE), RFC 5182

	closeOnce sync.Once
	loggedIn  atomic.Bool
	budget    *time.Timer // ends the connection if no login came in time
}

// selected is the selected mailbox of a session.
type selected struct {
	om       *openMailbox
	t        *imapserver.SessionTracker
	mb       store.Mailbox // as of SELECT; ID and SpecialUse do not change
	readOnly bool
	notify   chan struct{} // pinged when updates were queued (see Idle)

	// EXPUNGEs queued for this session (under om.mu), and how many of them
	// had been queued when a poll that sends expunges last started: when
	// the two differ, the client may still count a removed message, and
	// "*" may mean one the server view no longer has (see starUnsure).
	expQueued  uint64
	expDrained uint64
	// All updates queued (under om.mu) and drained (as expDrained), for
	// the bound maxQueued; bye ends the session when it is passed.
	queued, drained uint64
	overflowed      bool
	bye             func(text string)
}

func (s *session) logger() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return s.srv.log.With("remote", s.remote.String())
}

// bye ends the session from another goroutine (shutdown).
func (s *session) bye(text string) { s.conn.Bye(text) }

// Close implements imapserver.Session.
func (s *session) Close() error {
	s.closeOnce.Do(func() {
		if s.budget != nil {
			s.budget.Stop()
		}
		s.unselect()
		s.srv.endSession(s)
	})
	return nil
}

// Errors sent to clients. Texts are short and generic; details are logged.
func no(code imap.ResponseCode, text string) *imap.Error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

var (
	errNoSuchMailbox = no(imap.ResponseCodeNonExistent, "No such mailbox")
	errTryCreate     = no(imap.ResponseCodeTryCreate, "No such mailbox")
	errExists        = no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	errBadName       = no(imap.ResponseCodeCannot, "Invalid mailbox name")
	errOverQuota     = no(imap.ResponseCodeOverQuota, "Over quota")
	errReadOnly      = no("READ-ONLY", "Mailbox is read-only")
	errInternal      = no(imap.ResponseCodeServerBug, "Internal error, try again later")
	errUnavailable   = no(imap.ResponseCodeUnavailable, "Temporary failure, try again later")
)

// storeErr turns a store error into a response; what is not the client's
// doing is logged.
func (s *session) storeErr(op string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNoSuchMailbox
	case errors.Is(err, store.ErrExists):
		return errExists
	case errors.Is(err, store.ErrInvalid):
		return errBadName
	case errors.Is(err, store.ErrOverQuota):
		return errOverQuota
	}
	s.logger().Error("imap: store", "op", op, "err", err)
	return errInternal
}

// Login implements imapserver.Session; AUTHENTICATE PLAIN calls it too.
// imapserver only calls it over TLS, or on the loopback server.
func (s *session) Login(username, password string) error {
	ctx, cancel := context.WithTimeout(s.srv.ctx, loginTimeout)
	defer cancel()
	log := s.srv.log.With("remote", s.remote.String())
	canonical, err := s.srv.opts.Auth.Authenticate(ctx, s.remote, username, password)
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials):
		log.Info("imap: authentication failed", "user", username)
		return imapserver.ErrAuthFailed
	case errors.Is(err, auth.ErrThrottled):
		log.Warn("imap: authentication throttled", "user", username)
		return no(imap.ResponseCodeUnavailable, "Too many failed logins, try again later")
	case err != nil:
		log.Error("imap: authentication", "user", username, "err", err)
		return errUnavailable
	}
	u, err := s.srv.opts.Store.User(canonical)
	if err != nil {
		log.Error("imap: authenticated user not found", "user", canonical, "err", err)
		return errUnavailable
	}
	s.user = &u
	s.loggedIn.Store(true)
	if s.budget != nil {
		s.budget.Stop()
	}
	s.log = log.With("user", u.Address)
	s.log.Info("imap: authenticated")
	return nil
}

// AppendLimit implements imapserver.SessionAppendLimit (RFC 7889): the room
// left under the user's quota, at most smtp.max_message_size. When nothing
// is left, the cap is shown, so that APPEND fails with OVERQUOTA, which a
// client can explain, rather than TOOBIG. Before login it is 0: no APPEND
// literal is read from an unauthenticated client.
func (s *session) AppendLimit() uint32 {
	if s.user == nil {
		return 0
	}
	limit := s.srv.opts.MaxAppendSize
	if limit <= 0 || limit > math.MaxUint32 {
		limit = math.MaxUint32
	}
	used, quota, err := s.srv.opts.Store.Usage(s.user.ID)
	if err == nil && quota > 0 {
		if room := quota - used; room > 0 && room < limit {
			limit = room
		}
	}
	return uint32(limit)
}

// mailbox returns the user's mailbox called name.
func (s *session) mailbox(name string) (store.Mailbox, error) {
	n, err := store.ValidateMailboxName(name)
	if err != nil {
		return store.Mailbox{}, errNoSuchMailbox
	}
	mb, err := s.srv.opts.Store.MailboxByName(s.user.ID, n)
	if err != nil {
		return store.Mailbox{}, s.storeErr("mailbox", err)
	}
	return mb, nil
}

// target returns the destination mailbox of APPEND, COPY or MOVE: a missing
// one gives TRYCREATE (RFC 9051 section 7.1).
func (s *session) target(name string) (store.Mailbox, error) {
	n, err := store.ValidateMailboxName(name)
	if err != nil {
		return store.Mailbox{}, errBadName
	}
	mb, err := s.srv.opts.Store.MailboxByName(s.user.ID, n)
	if errors.Is(err, store.ErrNotFound) {
		return store.Mailbox{}, errTryCreate
	}
	if err != nil {
		return store.Mailbox{}, s.storeErr("mailbox", err)
	}
	return mb, nil
}

// systemFlags are the flags every mailbox supports.
var systemFlags = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, err
	}
	om := s.srv.reg.acquire(mb.ID)
	sel, data, err := s.join(om, mb, options.ReadOnly)
	if err != nil {
		s.srv.reg.release(om)
		return nil, err
	}
	s.sel = sel
	data.Flags = append(slices.Clone(systemFlags), data.Flags...)
	if !options.ReadOnly {
		data.PermanentFlags = append(slices.Clone(data.Flags), imap.FlagWildcard)
	} else {
		data.PermanentFlags = []imap.Flag{}
	}
	return data, nil
}

// join makes sel a session on om (loading it if needed) and returns the
// SELECT data of the view: counts, UIDNEXT, the first unseen message, and
// in Flags the keywords in use (the caller adds the system flags).
func (s *session) join(om *openMailbox, mb store.Mailbox, readOnly bool) (*selected, *imap.SelectData, error) {
	om.mu.Lock()
	defer om.mu.Unlock()
	om.loadLocked()
	if om.gone {
		return nil, nil, errNoSuchMailbox
	}
	if om.tracker == nil {
		return nil, nil, errInternal
	}
	sel := &selected{om: om, t: om.tracker.NewSession(), mb: mb, readOnly: readOnly, notify: make(chan struct{}, 1), bye: s.bye}
	om.sessions[sel] = struct{}{}
	data := &imap.SelectData{
		NumMessages: uint32(len(om.view)),
		UIDValidity: mb.UIDValidity,
		UIDNext:     imap.UID(mb.UIDNext),
	}
	keywords := map[imap.Flag]bool{}
	for i, v := range om.view {
		m := &v.m
		if m.UID >= uint32(data.UIDNext) {
			data.UIDNext = imap.UID(m.UID + 1)
		}
		if data.FirstUnseenSeqNum == 0 && !slices.Contains(m.Flags, store.FlagSeen) {
			data.FirstUnseenSeqNum = uint32(i + 1)
		}
		for _, f := range m.Flags {
			if !strings.HasPrefix(f, `\`) {
				keywords[imap.Flag(f)] = true
			}
		}
	}
	data.Flags = append(data.Flags, slices.Sorted(maps.Keys(keywords))...)
	return sel, data, nil
}

// Unselect implements imapserver.Session (UNSELECT, CLOSE).
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	sel := s.sel
	if sel == nil {
		return
	}
	s.sel = nil
	func() {
		sel.om.mu.Lock()
		defer sel.om.mu.Unlock()
		delete(sel.om.sessions, sel)
		sel.t.Close()
	}()
	s.srv.reg.release(sel.om)
	s.searchRes = nil
}

// Poll implements imapserver.Session: it writes the updates queued for
// this session (after every command).
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	s.sel.om.syncIfDirty()
	return s.sel.poll(w, allowExpunge)
}

// poll writes the updates queued for the session and keeps expDrained.
func (sel *selected) poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	var exp, all uint64
	if allowExpunge {
		sel.om.mu.Lock()
		exp, all = sel.expQueued, sel.queued
		sel.om.mu.Unlock()
	}
	if err := sel.t.Poll(w, allowExpunge); err != nil {
		return err
	}
	if allowExpunge {
		sel.expDrained = exp
		sel.om.mu.Lock()
		sel.drained = all
		sel.om.mu.Unlock()
	}
	return nil
}

// Idle implements imapserver.Session (RFC 2177). The registry pings
// sel.notify after queueing updates; since the channel holds one ping, a
// change queued while Poll writes is not missed.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	sel := s.sel
	if sel == nil {
		<-stop
		return nil
	}
	for {
		sel.om.syncIfDirty()
		if err := sel.poll(w, true); err != nil {
			return err
		}
		select {
		case <-sel.notify:
		case <-stop:
			return nil
		}
	}
}

// Namespace implements imapserver.SessionNamespace (RFC 2342): one
// personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: '/'}}}, nil
}

// Create implements imapserver.Session. Missing parents are created too
// (RFC 9051 section 6.3.4).
func (s *session) Create(name string, options *imap.CreateOptions) error {
	if len(options.SpecialUse) > 0 {
		return no("USEATTR", "Special-use attributes cannot be set")
	}
	name = strings.TrimSuffix(name, store.Separator)
	n, err := store.ValidateMailboxName(name)
	if err != nil {
		return errBadName
	}
	if n == "INBOX" {
		return errExists
	}
	st := s.srv.opts.Store
	boxes, err := st.Mailboxes(s.user.ID)
	if err != nil {
		return s.storeErr("mailboxes", err)
	}
	have := map[string]bool{}
	for _, mb := range boxes {
		have[mb.Name] = true
	}
	if have[n] {
		return errExists
	}
	var create []string
	parts := strings.Split(n, store.Separator)
	for i := range parts {
		p := strings.Join(parts[:i+1], store.Separator)
		if !have[p] {
			create = append(create, p)
		}
	}
	if len(boxes)+len(create) > maxMailboxes {
		return no(imap.ResponseCodeLimit, "Too many mailboxes")
	}
	for _, p := range create {
		if _, err := st.CreateMailbox(s.user.ID, p); err != nil {
			if errors.Is(err, store.ErrExists) && p != n {
				continue
			}
			return s.storeErr("create", err)
		}
	}
	s.log.Info("imap: mailbox created", "mailbox", n)
	return nil
}

// Delete implements imapserver.Session. Mailboxes below the deleted one
// stay (RFC 9051 section 6.3.5 allows it).
func (s *session) Delete(name string) error {
	n, err := store.ValidateMailboxName(name)
	if err != nil {
		return errNoSuchMailbox
	}
	if n == "INBOX" {
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	}
	if err := s.srv.opts.Store.DeleteMailbox(s.user.ID, n); err != nil {
		return s.storeErr("delete", err)
	}
	s.log.Info("imap: mailbox deleted", "mailbox", n)
	return nil
}

// Rename implements imapserver.Session.
func (s *session) Rename(oldName, newName string, options *imap.RenameOptions) error {
	from, err := store.ValidateMailboxName(oldName)
	if err != nil {
		return errNoSuchMailbox
	}
	to, err := store.ValidateMailboxName(strings.TrimSuffix(newName, store.Separator))
	if err != nil {
		return errBadName
	}
	if to == "INBOX" {
		return errExists
	}
	boxes, err := s.srv.opts.Store.Mailboxes(s.user.ID)
	if err != nil {
		return s.storeErr("mailboxes", err)
	}
	if from == "INBOX" && len(boxes) >= maxMailboxes {
		return no(imap.ResponseCodeLimit, "Too many mailboxes")
	}
	if err := s.srv.opts.Store.RenameMailbox(s.user.ID, from, to); err != nil {
		return s.storeErr("rename", err)
	}
	s.log.Info("imap: mailbox renamed", "mailbox", from, "to", to)
	return nil
}

// Subscribe implements imapserver.Session.
func (s *session) Subscribe(name string) error { return s.subscribe(name, true) }

// Unsubscribe implements imapserver.Session.
func (s *session) Unsubscribe(name string) error { return s.subscribe(name, false) }

func (s *session) subscribe(name string, on bool) error {
	n, err := store.ValidateMailboxName(name)
	if err != nil {
		return errNoSuchMailbox
	}
	if err := s.srv.opts.Store.SetSubscribed(s.user.ID, n, on); err != nil {
		return s.storeErr("subscribe", err)
	}
	return nil
}

// Status implements imapserver.Session.
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, err
	}
	return s.status(mb, options)
}

func (s *session) status(mb store.Mailbox, o *imap.StatusOptions) (*imap.StatusData, error) {
	d := &imap.StatusData{Mailbox: mb.Name, UIDNext: imap.UID(mb.UIDNext), UIDValidity: mb.UIDValidity}
	num, unseen, zero := mb.Messages, mb.Unseen, uint32(0)
	d.NumMessages, d.NumUnseen, d.NumRecent = &num, &unseen, &zero
	size := mb.Size
	d.Size = &size
	if o.AppendLimit {
		limit := s.AppendLimit()
		d.AppendLimit = &limit
	}
	if o.NumDeleted || o.DeletedStorage {
		msgs, err := s.srv.opts.Store.Messages(mb.ID)
		if err != nil {
			return nil, s.storeErr("status", err)
		}
		var n uint32
		var bytes int64
		for _, m := range msgs {
			if slices.Contains(m.Flags, string(imap.FlagDeleted)) {
				n++
				bytes += m.Size
			}
		}
		d.NumDeleted, d.DeletedStorage = &n, &bytes
	}
	return d, nil
}

func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

// storeFlags turns flags a client sent into the store's: \Recent, which
// only the server sets (and Sluice never does), is dropped.
func storeFlags(flags []imap.Flag) ([]string, error) {
	if len(flags) > maxStoreFlags {
		return nil, no(imap.ResponseCodeLimit, "Too many flags")
	}
	var out []string
	for _, f := range flags {
		if strings.EqualFold(string(f), `\Recent`) {
			continue
		}
		out = append(out, string(f))
	}
	return out, nil
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)
