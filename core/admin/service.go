// Package admin is the administration API: the operations behind the
// 'sluice' subcommands, served on a unix socket in the data directory
// while the server runs, and called directly on the data directory when it
// does not. Both paths run the same Service code, so a command behaves the
// same whether the server is up or not.
//
// The socket speaks JSON over HTTP: POST /v1/call with {"method": ...,
// "params": {...}}, answered with {"result": ...} or {"error": {"code":
// ..., "message": ...}}. It is created mode 0600 inside the 0700 data
// directory, and a connection from another user than the server's (or
// root) is closed at once. Every call that changes something is written
// to the audit log with who made it (see Service.Call and WithCaller).
package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/pluginset"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/core/trace"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/header"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// Caller runs an admin method: *Client over the socket, or *Service
// directly.
type Caller interface {
	Call(ctx context.Context, method string, params, result any) error
}

// Error is an admin failure with a stable code, which survives the trip
// through the socket.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Error codes.
const (
	CodeNotFound  = "not_found"
	CodeExists    = "exists"
	CodeInvalid   = "invalid"
	CodeNotLocal  = "not_local"
	CodeNotEmpty  = "not_empty"
	CodeBadState  = "bad_state"
	CodeNoMethod  = "no_method"
	CodeInternal  = "internal"
	CodeForbidden = "forbidden"
)

func toError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	code := CodeInternal
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, queue.ErrNotFound):
		code = CodeNotFound
	case errors.Is(err, store.ErrExists):
		code = CodeExists
	case errors.Is(err, store.ErrInvalid):
		code = CodeInvalid
	case errors.Is(err, store.ErrNotLocal):
		code = CodeNotLocal
	case errors.Is(err, store.ErrDomainNotEmpty):
		code = CodeNotEmpty
	case errors.Is(err, queue.ErrBadState):
		code = CodeBadState
	}
	return &Error{Code: code, Message: err.Error()}
}

// Service implements the admin methods on an open store and queue.
type Service struct {
	Store *store.Store
	Queue *queue.Queue
	// Pipelines are the filter pipelines, for learning and testing; nil
	// when none are running.
	Pipelines *pipeline.Holder
	// Hostname is the server's name, which filters see.
	Hostname string
	// Started is when the server started; zero when there is no server.
	Started time.Time
	// Bouncer sends DSNs for queue.bounce.
	Bouncer *dsn.Bouncer
	// PasswordPolicy is what every password set through the service
	// (user.add, user.passwd) must meet; the zero value is the default
	// policy (auth.DefaultMinPasswordLength characters).
	PasswordPolicy auth.PasswordPolicy
	// Log receives the audit log: one line per call of a method that
	// changes state (see Call). Nil means no audit log.
	Log *slog.Logger
}

// WithCaller returns ctx carrying who calls the admin methods run under
// it, for the audit log: the socket sets "unix:NAME(UID)" from the peer's
// credentials; the web admin passes, say, "web:alice@example.test".
func WithCaller(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, callerKey{}, who)
}

// CallerOf returns the caller set by WithCaller, or "local" (a command
// run in this process on the data directory).
func CallerOf(ctx context.Context) string {
	if who, ok := ctx.Value(callerKey{}).(string); ok && who != "" {
		return who
	}
	return "local"
}

type callerKey struct{}

// method is one admin operation: it decodes its params from JSON.
type method func(s *Service, ctx context.Context, params json.RawMessage) (any, error)

var methods = map[string]method{
	"status":             (*Service).status,
	"domain.add":         (*Service).domainAdd,
	"domain.ls":          (*Service).domainList,
	"domain.rm":          (*Service).domainRemove,
	"user.add":           (*Service).userAdd,
	"user.ls":            (*Service).userList,
	"user.passwd":        (*Service).userPasswd,
	"user.rm":            (*Service).userRemove,
	"user.set-alternate": (*Service).userSetAlternate,
	"user.set-quota":     (*Service).userSetQuota,
	"user.set-admin":     (*Service).userSetAdmin,
	"user.disable":       (*Service).userDisable,
	"user.enable":        (*Service).userEnable,
	"alias.add":          (*Service).aliasAdd,
	"alias.ls":           (*Service).aliasList,
	"alias.rm":           (*Service).aliasRemove,
	"mailbox.ls":         (*Service).mailboxList,
	"mailbox.msgs":       (*Service).mailboxMessages,
	"queue.ls":           (*Service).queueList,
	"queue.show":         (*Service).queueShow,
	"queue.rm":           (*Service).queueRemove,
	"queue.hold":         (*Service).queueHold,
	"queue.release":      (*Service).queueRelease,
	"queue.flush":        (*Service).queueFlush,
	"queue.bounce":       (*Service).queueBounce,
	"spam.learn":         (*Service).spamLearn,
	"pipeline.test":      (*Service).pipelineTest,
	"verify":             (*Service).verify,
}

// Call implements Caller by running the method in this process. params is
// marshalled to JSON and the result unmarshalled into result, exactly as
// over the socket, so both paths see the same types.
//
// Every call of a method that changes state, whether it succeeds or not,
// is written to Log as one line "admin action" with the attributes caller
// (CallerOf ctx), method, target (the user, alias, domain or queue ID the
// call names, or "" for none) and result ("ok" or "error", then with code
// and err). Passwords and other parameters are never logged.
func (s *Service) Call(ctx context.Context, name string, params, result any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	out, aerr := s.call(ctx, name, raw)
	if aerr != nil {
		return aerr
	}
	if result == nil {
		return nil
	}
	data, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return json.Unmarshal(data, result)
}

func (s *Service) call(ctx context.Context, name string, raw json.RawMessage) (any, *Error) {
	m, ok := methods[name]
	if !ok {
		return nil, &Error{Code: CodeNoMethod, Message: fmt.Sprintf("admin: unknown method %q", name)}
	}
	out, err := m(s, ctx, raw)
	var aerr *Error
	if err != nil {
		aerr = toError(err)
	}
	if s.Log != nil && isChange(name) {
		attrs := []any{"caller", CallerOf(ctx), "method", name, "target", target(raw)}
		if aerr == nil {
			s.Log.Info("admin action", append(attrs, "result", "ok")...)
		} else {
			s.Log.Warn("admin action", append(attrs, "result", "error", "code", aerr.Code, "err", aerr.Message)...)
		}
	}
	if aerr != nil {
		return nil, aerr
	}
	return out, nil
}

// isChange reports whether a method changes state, so that its calls go
// to the audit log.
func isChange(method string) bool {
	switch method {
	case "status", "domain.ls", "user.ls", "alias.ls", "mailbox.ls", "mailbox.msgs", "queue.ls", "queue.show":
		return false
	}
	return true
}

// target is what a call's params name, for the audit log: the first of
// the fields address, name, id, user and domain that is set; only these
// fields are read, so no password reaches the log.
func target(raw json.RawMessage) string {
	var p struct {
		Address, Name, ID, User, Domain string
	}
	if json.Unmarshal(raw, &p) != nil {
		return ""
	}
	for _, v := range []string{p.Address, p.Name, p.ID, p.User, p.Domain} {
		if v != "" {
			return v
		}
	}
	return ""
}

func decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 || string(raw) == "null" {
		return v, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, &Error{Code: CodeInvalid, Message: "admin: bad parameters: " + err.Error()}
	}
	return v, nil
}

// Status is what "status" returns.
type Status struct {
	Running   bool      `json:"running"` // answered by a running server
	Started   time.Time `json:"started,omitzero"`
	PID       int       `json:"pid,omitempty"` // of the running server
	Queue     int       `json:"queue"`         // messages in the queue
	QueueHold int       `json:"queue_hold"`    // of which on hold
	// Quarantine is the number of quarantined messages.
	Quarantine int `json:"quarantine"`
	// Plugins are the running filter plugins by stage.
	Plugins []PluginStatus `json:"plugins,omitempty"`
}

// PluginStatus describes one running plugin.
type PluginStatus struct {
	Stage    string `json:"stage"`
	Name     string `json:"name"`
	Version  string `json:"version,omitempty"`
	Hooks    string `json:"hooks"`
	PID      int    `json:"pid"`
	Restarts int64  `json:"restarts"`
}

func (s *Service) status(ctx context.Context, _ json.RawMessage) (any, error) {
	all, err := s.Queue.List(queue.Filter{})
	if err != nil {
		return nil, err
	}
	st := Status{Running: !s.Started.IsZero(), Started: s.Started, Queue: len(all)}
	if st.Running {
		st.PID = os.Getpid()
	}
	for _, m := range all {
		switch m.Status {
		case queue.StatusHold:
			st.QueueHold++
		case queue.StatusQuarantine:
			st.Quarantine++
		}
	}
	if s.Pipelines != nil {
		if set := s.Pipelines.Current(); set != nil {
			for stage, p := range pluginset.Plugins(set) {
				info := p.Info()
				st.Plugins = append(st.Plugins, PluginStatus{Stage: stage, Name: info.Name, Version: info.Version, Hooks: info.HookList(), PID: p.PID(), Restarts: p.Restarts()})
			}
			slices.SortFunc(st.Plugins, func(a, b PluginStatus) int { return strings.Compare(a.Stage, b.Stage) })
		}
	}
	return st, nil
}

// DomainParams names a domain.
type DomainParams struct {
	Name string `json:"name"`
}

func (s *Service) domainAdd(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[DomainParams](raw)
	if err != nil {
		return nil, err
	}
	return s.Store.AddDomain(p.Name)
}

func (s *Service) domainList(ctx context.Context, _ json.RawMessage) (any, error) {
	ds, err := s.Store.Domains()
	if ds == nil {
		ds = []store.Domain{}
	}
	return ds, err
}

func (s *Service) domainRemove(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[DomainParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.RemoveDomain(p.Name)
}

// UserAddParams describes a new user. The password is hashed by the
// server; it never reaches the disk.
type UserAddParams struct {
	Address   string `json:"address"`
	Password  string `json:"password"`
	Alternate string `json:"alternate,omitempty"`
	// Quota in bytes; nil means the configured default, 0 none; a
	// negative quota is refused.
	Quota *int64 `json:"quota,omitempty"`
	// Admin gives the new user the admin role.
	Admin bool `json:"admin,omitempty"`
}

// UserView is a user as listings show it: without the password hash.
type UserView struct {
	ID        uint64    `json:"id"`
	Address   string    `json:"address"`
	Alternate string    `json:"alternate,omitempty"`
	Quota     int64     `json:"quota"`
	Used      int64     `json:"used"`
	Created   time.Time `json:"created"`
	Admin     bool      `json:"admin"`    // has the admin role
	Disabled  bool      `json:"disabled"` // cannot log in; still receives mail
}

func viewUser(u store.User, used int64) UserView {
	return UserView{ID: u.ID, Address: u.Address, Alternate: u.Alternate, Quota: u.Quota, Used: used, Created: u.Created, Admin: u.Admin, Disabled: u.Disabled}
}

func (s *Service) userAdd(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserAddParams](raw)
	if err != nil {
		return nil, err
	}
	if p.Password == "" {
		return nil, &Error{Code: CodeInvalid, Message: "admin: a password is required"}
	}
	if p.Quota != nil && *p.Quota < 0 {
		return nil, &Error{Code: CodeInvalid, Message: "admin: negative quota"}
	}
	hash, err := s.newPasswordHash(p.Address, p.Password)
	if err != nil {
		return nil, err
	}
	quota := int64(-1)
	if p.Quota != nil {
		quota = *p.Quota
	}
	u, err := s.Store.AddUser(store.NewUser{Address: p.Address, PasswordHash: hash, Alternate: p.Alternate, Quota: quota, Admin: p.Admin})
	if err != nil {
		return nil, err
	}
	return viewUser(u, 0), nil
}

// UserListParams filters user.ls.
type UserListParams struct {
	Domain string `json:"domain,omitempty"`
}

func (s *Service) userList(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserListParams](raw)
	if err != nil {
		return nil, err
	}
	us, err := s.Store.Users(strings.ToLower(p.Domain))
	if err != nil {
		return nil, err
	}
	out := []UserView{}
	for _, u := range us {
		out = append(out, viewUser(u.User, u.Used))
	}
	return out, nil
}

// UserParams names a user, with a new password, alternate address,
// quota or admin role where the method takes one.
type UserParams struct {
	Address   string `json:"address"`
	Password  string `json:"password,omitempty"`
	Alternate string `json:"alternate,omitempty"`
	Quota     int64  `json:"quota,omitempty"`
	// Admin is for user.set-admin, which requires it: true gives the
	// role, false takes it away.
	Admin *bool `json:"admin,omitempty"`
}

func (s *Service) userPasswd(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	if p.Password == "" {
		return nil, &Error{Code: CodeInvalid, Message: "admin: a password is required"}
	}
	hash, err := s.newPasswordHash(p.Address, p.Password)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.SetPasswordHash(p.Address, hash)
}

// newPasswordHash checks a password about to be set for address against
// s.PasswordPolicy and returns its hash. Every method that sets a
// password goes through it; a refusal is CodeInvalid with the policy's
// message, which says what to do.
func (s *Service) newPasswordHash(address, password string) (string, error) {
	if err := s.PasswordPolicy.Check(address, password); err != nil {
		return "", &Error{Code: CodeInvalid, Message: err.Error()}
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return "", &Error{Code: CodeInvalid, Message: err.Error()}
	}
	return hash, nil
}

func (s *Service) userRemove(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.RemoveUser(p.Address)
}

func (s *Service) userSetAlternate(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.SetAlternate(p.Address, p.Alternate)
}

func (s *Service) userSetQuota(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.SetQuota(p.Address, p.Quota)
}

// userSetAdmin gives (admin true) or takes away a user's admin role.
func (s *Service) userSetAdmin(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	if p.Admin == nil {
		return nil, &Error{Code: CodeInvalid, Message: "admin: user.set-admin needs admin true or false"}
	}
	return nil, s.Store.SetAdmin(p.Address, *p.Admin)
}

// userDisable stops a user's logins (SMTP AUTH, IMAP, POP3); mail to
// them is still delivered.
func (s *Service) userDisable(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.SetDisabled(p.Address, true)
}

func (s *Service) userEnable(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[UserParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.SetDisabled(p.Address, false)
}

// AliasParams names an alias and, for alias.add and alias.rm, targets.
type AliasParams struct {
	Address string   `json:"address"`
	Targets []string `json:"targets,omitempty"`
}

func (s *Service) aliasAdd(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[AliasParams](raw)
	if err != nil {
		return nil, err
	}
	return s.Store.AddAlias(p.Address, p.Targets)
}

func (s *Service) aliasList(ctx context.Context, _ json.RawMessage) (any, error) {
	as, err := s.Store.Aliases()
	if as == nil {
		as = []store.Alias{}
	}
	return as, err
}

func (s *Service) aliasRemove(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[AliasParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Store.RemoveAlias(p.Address, p.Targets)
}

// MailboxParams names a user and, for mailbox.msgs, a folder.
type MailboxParams struct {
	User   string `json:"user"`
	Folder string `json:"folder,omitempty"` // "" is INBOX
}

// MailboxView is a folder in mailbox.ls.
type MailboxView struct {
	Name        string `json:"name"`
	SpecialUse  string `json:"special_use,omitempty"`
	Messages    uint32 `json:"messages"`
	Unseen      uint32 `json:"unseen"`
	Size        int64  `json:"size"`
	UIDValidity uint32 `json:"uid_validity"`
	UIDNext     uint32 `json:"uid_next"`
}

func (s *Service) mailboxList(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[MailboxParams](raw)
	if err != nil {
		return nil, err
	}
	u, err := s.Store.User(p.User)
	if err != nil {
		return nil, err
	}
	mbs, err := s.Store.Mailboxes(u.ID)
	if err != nil {
		return nil, err
	}
	out := []MailboxView{}
	for _, mb := range mbs {
		out = append(out, MailboxView{Name: mb.Name, SpecialUse: mb.SpecialUse, Messages: mb.Messages, Unseen: mb.Unseen, Size: mb.Size, UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext})
	}
	return out, nil
}

// MessageView is a message in mailbox.msgs.
type MessageView struct {
	UID          uint32    `json:"uid"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Subject      string    `json:"subject"`
	Size         int64     `json:"size"`
	Date         time.Time `json:"date"` // the Date header, or the arrival time if it has none
	InternalDate time.Time `json:"internal_date"`
	Flags        []string  `json:"flags"`
	MessageID    string    `json:"message_id,omitempty"`
}

func (s *Service) mailboxMessages(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[MailboxParams](raw)
	if err != nil {
		return nil, err
	}
	u, err := s.Store.User(p.User)
	if err != nil {
		return nil, err
	}
	folder := p.Folder
	if folder == "" {
		folder = "INBOX"
	}
	mb, err := s.Store.MailboxByName(u.ID, folder)
	if err != nil {
		return nil, err
	}
	msgs, err := s.Store.Messages(mb.ID)
	if err != nil {
		return nil, err
	}
	out := []MessageView{}
	for _, m := range msgs {
		date := m.Date
		if date.IsZero() {
			date = m.InternalDate
		}
		flags := m.Flags
		if flags == nil {
			flags = []string{}
		}
		out = append(out, MessageView{UID: m.UID, From: m.From, To: m.To, Subject: m.Subject, Size: m.Size, Date: date, InternalDate: m.InternalDate, Flags: flags, MessageID: m.MessageID})
	}
	return out, nil
}

// QueueListParams filters queue.ls.
type QueueListParams struct {
	Status string `json:"status,omitempty"` // active or hold
	Route  string `json:"route,omitempty"`  // local or remote
	Domain string `json:"domain,omitempty"`
	MinAge string `json:"min_age,omitempty"` // a Go duration
}

func (s *Service) queueList(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueListParams](raw)
	if err != nil {
		return nil, err
	}
	f := queue.Filter{Status: queue.Status(p.Status), Route: queue.Route(p.Route), Domain: strings.ToLower(p.Domain)}
	switch f.Status {
	case "", queue.StatusActive, queue.StatusHold, queue.StatusQuarantine:
	default:
		return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("admin: unknown status %q (active, hold or quarantine)", p.Status)}
	}
	switch f.Route {
	case "", queue.RouteLocal, queue.RouteRemote:
	default:
		return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("admin: unknown route %q (local or remote)", p.Route)}
	}
	if p.MinAge != "" {
		d, err := time.ParseDuration(p.MinAge)
		if err != nil {
			return nil, &Error{Code: CodeInvalid, Message: "admin: bad age: " + err.Error()}
		}
		f.MinAge = d
	}
	ms, err := s.Queue.List(f)
	if ms == nil {
		ms = []*queue.Message{}
	}
	return ms, err
}

// QueueParams names a queued message.
type QueueParams struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// QueueMessageView is queue.show: the record and the message's header.
type QueueMessageView struct {
	*queue.Message
	Header string `json:"header"`
}

func (s *Service) queueShow(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueParams](raw)
	if err != nil {
		return nil, err
	}
	m, err := s.Queue.Get(p.ID)
	if err != nil {
		return nil, err
	}
	return QueueMessageView{Message: m, Header: s.readHeader(m)}, nil
}

// readHeader returns the header section of a queued message as it is
// relayed (without its Return-Path field), as package header reads it, up
// to 64 KiB of whole lines.
func (s *Service) readHeader(m *queue.Message) string {
	f, err := s.Queue.OpenBody(m)
	if err != nil {
		return ""
	}
	defer f.Close()
	h, _, _ := header.Section(bufio.NewReader(f), 64<<10)
	return string(h)
}

func (s *Service) queueRemove(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Queue.Remove(p.ID)
}

func (s *Service) queueHold(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueParams](raw)
	if err != nil {
		return nil, err
	}
	reason := p.Reason
	if reason == "" {
		reason = "held by an administrator"
	}
	return nil, s.Queue.Hold(p.ID, reason)
}

func (s *Service) queueRelease(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueParams](raw)
	if err != nil {
		return nil, err
	}
	return nil, s.Queue.Release(p.ID)
}

// QueueFlushParams names what queue.flush retries now: one message, the
// messages for one domain, or (both empty) everything.
type QueueFlushParams struct {
	ID     string `json:"id,omitempty"`
	Domain string `json:"domain,omitempty"`
}

// CountResult is a number of things done.
type CountResult struct {
	Count int `json:"count"`
}

func (s *Service) queueFlush(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueFlushParams](raw)
	if err != nil {
		return nil, err
	}
	if p.ID != "" {
		if p.Domain != "" {
			return nil, &Error{Code: CodeInvalid, Message: "admin: flush an ID or a domain, not both"}
		}
		if err := s.Queue.Flush(p.ID); err != nil {
			return nil, err
		}
		return CountResult{Count: 1}, nil
	}
	n, err := s.Queue.FlushDomain(strings.ToLower(p.Domain))
	return CountResult{Count: n}, err
}

func (s *Service) queueBounce(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[QueueParams](raw)
	if err != nil {
		return nil, err
	}
	if s.Bouncer == nil {
		return nil, &Error{Code: CodeInvalid, Message: "admin: bouncing is not available here"}
	}
	n, err := s.Bouncer.Bounce(p.ID, p.Reason, time.Now())
	return CountResult{Count: n}, err
}

// VerifyResult is what verify returns.
type VerifyResult struct {
	Store store.VerifyReport `json:"store"`
}

func (s *Service) verify(ctx context.Context, _ json.RawMessage) (any, error) {
	// Beside a running server, leave files young enough to belong to a
	// delivery in flight.
	minAge := time.Duration(0)
	if !s.Started.IsZero() {
		minAge = 10 * time.Minute
	}
	rep, err := s.Store.Verify(minAge)
	return VerifyResult{Store: rep}, err
}

var _ Caller = (*Service)(nil)

// LearnParams trains the learning stages (the spam plugin) with messages.
type LearnParams struct {
	// Paths are message files (RFC 5322, as .eml) readable by the server.
	Paths []string `json:"paths"`
	Spam  bool     `json:"spam"`
	// Pipeline is inbound (the default) or outbound; Stage restricts
	// learning to one stage.
	Pipeline string `json:"pipeline,omitempty"`
	Stage    string `json:"stage,omitempty"`
}

// LearnResult counts what was learned.
type LearnResult struct {
	Learned int      `json:"learned"`
	Failed  []string `json:"failed,omitempty"` // path: error
}

func (s *Service) spamLearn(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[LearnParams](raw)
	if err != nil {
		return nil, err
	}
	if s.Pipelines == nil {
		return nil, &Error{Code: CodeInvalid, Message: "admin: no filter pipelines are running"}
	}
	name := p.Pipeline
	if name == "" {
		name = "inbound"
	}
	set, release := s.Pipelines.Acquire()
	defer release()
	pipe := set.Get(name)
	var res LearnResult
	for _, path := range p.Paths {
		if err := learnFile(ctx, pipe, p.Stage, path, p.Spam); err != nil {
			if errors.Is(err, pipeline.ErrNoLearner) {
				return nil, &Error{Code: CodeInvalid, Message: err.Error()}
			}
			res.Failed = append(res.Failed, path+": "+err.Error())
			continue
		}
		res.Learned++
	}
	return res, nil
}

// learnFile teaches the pipeline's learning stages one message file.
func learnFile(ctx context.Context, p *pipeline.Pipeline, stage, path string, spam bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	hdr, _ := header.Read(bufio.NewReader(f))
	open := func() (io.ReadCloser, error) { return os.Open(path) }
	return p.Learn(ctx, stage, &sdk.Envelope{Pipeline: p.Name}, hdr, fi.Size(), open, spam)
}

// PipelineTestParams describes a message to run through a pipeline.
type PipelineTestParams struct {
	Path     string   `json:"path"`               // the message file (.eml)
	Pipeline string   `json:"pipeline,omitempty"` // inbound (default) or outbound
	From     string   `json:"from,omitempty"`     // MAIL FROM; "" is <>
	To       []string `json:"to,omitempty"`       // RCPT TO
	IP       string   `json:"ip,omitempty"`       // the client's address; default 127.0.0.1
	HELO     string   `json:"helo,omitempty"`     // default localhost
	User     string   `json:"user,omitempty"`     // an authenticated user, for outbound
}

// PipelineTestOutcome is the overall result of a pipeline test.
type PipelineTestOutcome struct {
	Action verdict.Action `json:"action"`
	Score  float64        `json:"score"`
	Code   int            `json:"code,omitempty"`
	Text   string         `json:"text,omitempty"`
	Stage  string         `json:"stage,omitempty"`
	Reason string         `json:"reason,omitempty"`
	Header string         `json:"header,omitempty"` // the fields that would be added
}

// PipelineTestResult is what pipeline.test returns.
type PipelineTestResult struct {
	Outcome PipelineTestOutcome `json:"outcome"`
	Stages  []trace.StageResult `json:"stages"`
}

// pipelineTest runs a message through a pipeline's hooks as a session
// would (connect, MAIL, each RCPT, DATA), without queueing it.
func (s *Service) pipelineTest(ctx context.Context, raw json.RawMessage) (any, error) {
	p, err := decode[PipelineTestParams](raw)
	if err != nil {
		return nil, err
	}
	if s.Pipelines == nil {
		return nil, &Error{Code: CodeInvalid, Message: "admin: no filter pipelines are running"}
	}
	name := p.Pipeline
	if name == "" {
		name = "inbound"
	}
	if name != "inbound" && name != "outbound" {
		return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("admin: unknown pipeline %q (inbound or outbound)", name)}
	}
	ipText := p.IP
	if ipText == "" {
		ipText = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(ipText)
	if err != nil {
		return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("admin: bad IP address %q", p.IP)}
	}
	f, err := os.Open(p.Path)
	if err != nil {
		return nil, &Error{Code: CodeInvalid, Message: "admin: " + err.Error()}
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, &Error{Code: CodeInvalid, Message: "admin: " + p.Path + " is not a regular file"}
	}
	hdr, _ := header.Read(bufio.NewReader(f))
	f.Close()
	helo := p.HELO
	if helo == "" {
		helo = "localhost"
	}
	listener := "mx"
	if name == "outbound" {
		listener = "submission"
	}
	env := &sdk.Envelope{ClientIP: ip, HELO: helo, AuthUser: p.User, Listener: listener, Pipeline: name, Hostname: s.Hostname, QueueID: "0000000000000000"}
	if p.User != "" && s.Store != nil {
		addrs, err := s.Store.SenderAddresses(p.User)
		if err != nil {
			return nil, fmt.Errorf("admin: user %s: %w", p.User, err)
		}
		env.AuthAddresses = addrs
	}
	set, release := s.Pipelines.Acquire()
	defer release()
	pipe := set.Get(name)
	out := pipeline.Outcome{Action: verdict.Continue}
	decided := func() bool { return out.Action == verdict.Reject || out.Action == verdict.Tempfail }
	out.Merge(pipe.Connect(ctx, env))
	if !decided() {
		env.MailFrom = p.From
		out.Merge(pipe.Mail(ctx, env))
	}
	for _, rcpt := range p.To {
		if decided() {
			break
		}
		o := pipe.Rcpt(ctx, env, rcpt)
		out.Merge(o)
		env.RcptTo = append(env.RcptTo, rcpt)
	}
	if !decided() {
		open := func() (io.ReadCloser, error) { return os.Open(p.Path) }
		out.Merge(pipe.Data(ctx, env, hdr, fi.Size(), open))
	}
	res := PipelineTestResult{
		Outcome: PipelineTestOutcome{Action: out.Action, Score: out.Score, Stage: out.Stage, Reason: out.Reason, Header: string(out.HeaderBlock(s.Hostname))},
		Stages:  out.Trace,
	}
	if decided() {
		res.Outcome.Code, res.Outcome.Text = out.Code, out.Enhanced.String()+" "+out.Text
	}
	if res.Stages == nil {
		res.Stages = []trace.StageResult{}
	}
	return res, nil
}
