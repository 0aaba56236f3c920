package webmail

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/style.css
var styleCSS []byte

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// contentSecurityPolicy allows this origin's style sheet and images and
// forms posted to this origin, and nothing else: no script, no inline
// style, no framing, no <base>.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pageSize is the number of messages on a page of a folder.
const pageSize = 50

// routes returns the whole handler: the security headers around the
// cross-origin check around the pages.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /static/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(styleCSS)
	})
	mux.HandleFunc("GET /login", s.loginForm)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.HandleFunc("GET /{$}", s.folders)
	mux.HandleFunc("GET /folder", s.folder)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such page.")
	})
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("web: cross-origin request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		s.errorPage(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	return securityHeaders(cop.Handler(mux))
}

// securityHeaders sets the security headers on every response, before
// the handler runs, so that errors have them too.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store") // the style sheet overrides it
		next.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title    string
	User     string // logged-in user; "" shows no logout button
	Error    string
	Next     string
	Username string
	Folders  []store.Mailbox
	Folder   string
	Messages []messageRow
	Page     int
	Pages    int
	Prev     int
	NextPage int
}

type messageRow struct {
	Date, From, Subject, Size string
	Unread                    bool
}

// render executes a template into a buffer first, so that a failure is a
// clean 500 and not half a page.
func (s *Server) render(w http.ResponseWriter, code int, name string, p page) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("web: template", "template", name, "err", err)
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.render(w, code, "error.html", page{Title: http.StatusText(code), Error: msg, User: s.currentUser(r)})
}

// sessionID is the session cookie's value, or "".
func sessionID(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// currentUser is the logged-in user of r, or "".
func (s *Server) currentUser(r *http.Request) string {
	return s.sessions.get(sessionID(r))
}

// clientIP is the TCP peer's address: the one the throttle counts.
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// safeNext returns next if it is a path on this server, else "/": the
// page after login is never another site (no open redirect). A path
// starting with // or /\ is another host to a browser, and browsers
// drop tabs and newlines from URLs, so none of these pass.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\") {
		return "/"
	}
	for _, c := range []byte(next) {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	return next
}

// loginPath is the login page, returning to r's page afterwards.
func loginPath(r *http.Request) string {
	return "/login?next=" + url.QueryEscape(r.URL.RequestURI())
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if s.currentUser(r) != "" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	s.render(w, http.StatusOK, "login.html", page{Title: "Log in", Next: next})
}

// login checks the password with the shared Authenticator (and so the
// shared throttle) and starts a new session.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	username, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	next := safeNext(r.PostForm.Get("next"))
	ip := clientIP(r)
	log := s.log.With("remote", ip.String())
	ctx, cancel := context.WithTimeout(r.Context(), loginTimeout)
	defer cancel()
	user, err := s.opts.Auth.Authenticate(ctx, ip, username, password)
	form := page{Title: "Log in", Next: next, Username: username}
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials):
		log.Info("web: authentication failed", "user", username)
		form.Error = "Wrong email address or password."
		s.render(w, http.StatusUnauthorized, "login.html", form)
		return
	case errors.Is(err, auth.ErrThrottled):
		log.Warn("web: authentication throttled", "user", username)
		form.Error = "Too many failed logins. Try again later."
		s.render(w, http.StatusTooManyRequests, "login.html", form)
		return
	case err != nil:
		log.Error("web: authentication", "user", username, "err", err)
		form.Error = "Logging in is not possible right now. Try again later."
		s.render(w, http.StatusServiceUnavailable, "login.html", form)
		return
	}
	// A new ID at every login: a cookie planted before (session
	// fixation) is never the one that is logged in.
	if old := sessionID(r); old != "" {
		s.sessions.remove(old)
	}
	acct, err := s.opts.Store.User(user)
	if err != nil {
		log.Error("web: reading the user who logged in", "user", user, "err", err)
		form.Error = "Logging in is not possible right now. Try again later."
		s.render(w, http.StatusServiceUnavailable, "login.html", form)
		return
	}
	id := s.sessions.create(user, credentials(acct))
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    id,
		Path:     "/",
		MaxAge:   int(s.opts.MaxLifetime.Seconds()),
		Secure:   true,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	log.Info("web: logged in", "user", user)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session on the server and clears the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if id := sessionID(r); id != "" {
		if user := s.sessions.get(id); user != "" {
			s.log.Info("web: logged out", "remote", clientIP(r).String(), "user", user)
		}
		s.sessions.remove(id)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// account returns the logged-in user's account, or sends the browser to
// the login page (ok false).
func (s *Server) account(w http.ResponseWriter, r *http.Request) (u store.User, ok bool) {
	addr := s.currentUser(r)
	if addr == "" {
		http.Redirect(w, r, loginPath(r), http.StatusSeeOther)
		return u, false
	}
	u, err := s.opts.Store.User(addr)
	if errors.Is(err, store.ErrNotFound) {
		// Removed since login: the session ends.
		s.log.Info("web: session of a removed user ended", "user", addr)
		s.sessions.remove(sessionID(r))
		http.Redirect(w, r, loginPath(r), http.StatusSeeOther)
		return u, false
	}
	if err != nil {
		s.log.Error("web: reading the logged-in user", "user", addr, "err", err)
		s.errorPage(w, r, http.StatusServiceUnavailable, "Your account cannot be read right now.")
		return u, false
	}
	if u.Disabled || credentials(u) != s.sessions.stamp(sessionID(r)) {
		// Disabled, or the password changed (by the user, the
		// administrator or a reset) since login: the session ends.
		s.log.Info("web: session ended: account disabled or password changed since login", "user", addr)
		s.sessions.remove(sessionID(r))
		http.Redirect(w, r, loginPath(r), http.StatusSeeOther)
		return u, false
	}
	return u, true
}

// folders lists the user's folders with message and unread counts, as
// 'sluice mailbox ls' does.
func (s *Server) folders(w http.ResponseWriter, r *http.Request) {
	u, ok := s.account(w, r)
	if !ok {
		return
	}
	mbs, err := s.opts.Store.Mailboxes(u.ID)
	if err != nil {
		s.log.Error("web: store", "op", "mailboxes", "user", u.Address, "err", err)
		s.errorPage(w, r, http.StatusServiceUnavailable, "Your folders cannot be read right now.")
		return
	}
	s.render(w, http.StatusOK, "folders.html", page{Title: "Folders", User: u.Address, Folders: mbs})
}

// folder lists the messages of one folder, newest first, pageSize at a
// time (?name=FOLDER&page=N, from 1).
func (s *Server) folder(w http.ResponseWriter, r *http.Request) {
	u, ok := s.account(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	mb, err := s.opts.Store.MailboxByName(u.ID, q.Get("name"))
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		s.errorPage(w, r, http.StatusNotFound, "There is no such folder.")
		return
	case err != nil:
		s.log.Error("web: store", "op", "mailbox", "user", u.Address, "err", err)
		s.errorPage(w, r, http.StatusServiceUnavailable, "This folder cannot be read right now.")
		return
	}
	msgs, err := s.opts.Store.Messages(mb.ID)
	if err != nil {
		s.log.Error("web: store", "op", "messages", "user", u.Address, "err", err)
		s.errorPage(w, r, http.StatusServiceUnavailable, "This folder cannot be read right now.")
		return
	}
	slices.Reverse(msgs) // UID order is arrival order: newest first
	pages := max(1, (len(msgs)+pageSize-1)/pageSize)
	n, err := strconv.Atoi(q.Get("page"))
	if q.Get("page") == "" {
		n, err = 1, nil
	}
	if err != nil || n < 1 || n > pages {
		s.errorPage(w, r, http.StatusNotFound, "There is no such page.")
		return
	}
	p := page{Title: mb.Name, User: u.Address, Folder: mb.Name, Page: n, Pages: pages}
	if n > 1 {
		p.Prev = n - 1
	}
	if n < pages {
		p.NextPage = n + 1
	}
	for _, m := range msgs[(n-1)*pageSize : min(len(msgs), n*pageSize)] {
		date := m.Date
		if date.IsZero() {
			date = m.InternalDate
		}
		p.Messages = append(p.Messages, messageRow{
			Date:    date.Format("2006-01-02 15:04"),
			From:    m.From,
			Subject: m.Subject,
			Size:    humanSize(m.Size),
			Unread:  !slices.Contains(m.Flags, `\Seen`),
		})
	}
	s.render(w, http.StatusOK, "folder.html", p)
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// credentials is the stamp of u's credentials as they are now.
func credentials(u store.User) [sha256.Size]byte {
	return sha256.Sum256([]byte(u.PasswordHash))
}
