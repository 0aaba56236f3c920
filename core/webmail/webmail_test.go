package webmail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/core/tlscert"
)

const (
	alice     = "alice@example.test"
	alicePass = "alice-secret"
)

var (
	setupOnce sync.Once
	aliceHash string
	testCert  tls.Certificate
)

func setup(t *testing.T) {
	t.Helper()
	var err error
	setupOnce.Do(func() {
		if aliceHash, err = auth.HashPassword(alicePass); err != nil {
			return
		}
		var certPEM, keyPEM []byte
		if certPEM, keyPEM, err = tlscert.SelfSigned("mx.example.test"); err != nil {
			return
		}
		testCert, err = tls.X509KeyPair(certPEM, keyPEM)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testEnv is a running web server on a loopback port with one user,
// alice, and an HTTP/2 client for it.
type testEnv struct {
	srv    *Server
	st     *store.Store
	authn  *auth.Authenticator
	user   store.User
	base   string // https://127.0.0.1:PORT
	client *http.Client
	clock  time.Time // the sessions' clock, when fake
}

func newEnv(t *testing.T, edit func(*Options)) *testEnv {
	t.Helper()
	return newEnvWrapped(t, edit, nil)
}

// newEnvWrapped is newEnv with the server's handler wrapped by wrap.
func newEnvWrapped(t *testing.T, edit func(*Options), wrap func(http.Handler) http.Handler) *testEnv {
	t.Helper()
	setup(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := store.Open(store.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.AddDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	u, err := st.AddUser(store.NewUser{Address: alice, PasswordHash: aliceHash})
	if err != nil {
		t.Fatal(err)
	}
	authn := &auth.Authenticator{Users: st, Throttle: &auth.Throttle{MaxPerIP: 3, MaxPerUser: 100, Window: time.Hour}}
	opts := Options{
		Listen: []string{"127.0.0.1:0"},
		TLS:    &tls.Config{Certificates: []tls.Certificate{testCert}},
		Auth:   authn,
		Store:  st,
		Logger: log,
	}
	if edit != nil {
		edit(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		srv.http.Handler = wrap(srv.http.Handler)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	})
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &testEnv{
		srv: srv, st: st, authn: authn, user: u,
		base: "https://" + srv.Addrs()[0].String(),
		client: &http.Client{
			Transport:     tr,
			Timeout:       30 * time.Second, // a safety ceiling
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// fakeClock makes the sessions' clock one that advance moves.
func (e *testEnv) fakeClock() {
	e.clock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.srv.sessions.now = func() time.Time { return e.clock }
}

// response is what a test looks at.
type response struct {
	*http.Response
	body string
}

// do sends a request with the given cookie value ("" for none) and extra
// headers, and reads the whole response.
func (e *testEnv) do(t *testing.T, method, path, cookie string, form url.Values, hdr ...string) response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp, string(b)}
}

// sessionCookie returns the session cookie the response sets, or nil.
func (r response) sessionCookie() *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	return nil
}

// login logs alice in, presenting cookie ("" for none), and returns the
// new session cookie's value.
func (e *testEnv) login(t *testing.T, cookie string) string {
	t.Helper()
	r := e.do(t, "POST", "/login", cookie, url.Values{"username": {alice}, "password": {alicePass}})
	c := r.sessionCookie()
	if r.StatusCode != http.StatusSeeOther || c == nil || c.Value == "" {
		t.Fatalf("login: %s, cookie %v\n%s", r.Status, c, r.body)
	}
	return c.Value
}

// loggedIn reports whether cookie is a live session: / shows the folders
// rather than sending to the login page.
func (e *testEnv) loggedIn(t *testing.T, cookie string) bool {
	t.Helper()
	r := e.do(t, "GET", "/", cookie, nil)
	switch {
	case r.StatusCode == http.StatusOK && strings.Contains(r.body, "INBOX"):
		return true
	case r.StatusCode == http.StatusSeeOther && strings.HasPrefix(r.Header.Get("Location"), "/login"):
		return false
	}
	t.Fatalf("GET / = %s, Location %q\n%s", r.Status, r.Header.Get("Location"), r.body)
	return false
}

func checkSecurityHeaders(t *testing.T, what string, r response, page bool) {
	t.Helper()
	want := map[string]string{
		"Strict-Transport-Security": "max-age=31536000",
		"Content-Security-Policy":   "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
	}
	if page {
		want["Cache-Control"] = "no-store"
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s (%s): %s = %q, want %q", what, r.Status, k, got, v)
		}
	}
	if r.ProtoMajor != 2 {
		t.Errorf("%s: protocol %s, want HTTP/2", what, r.Proto)
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	e := newEnv(t, nil)
	cookie := e.login(t, "")
	for _, tc := range []struct {
		what, method, path, cookie string
		form                       url.Values
		hdr                        []string
		code                       int
	}{
		{"login form", "GET", "/login", "", nil, nil, 200},
		{"home, logged out", "GET", "/", "", nil, nil, 303},
		{"home", "GET", "/", cookie, nil, nil, 200},
		{"folder", "GET", "/folder?name=INBOX", cookie, nil, nil, 200},
		{"unknown folder", "GET", "/folder?name=Nope", cookie, nil, nil, 404},
		{"404", "GET", "/nothing/here", "", nil, nil, 404},
		{"404 logged in", "GET", "/nothing/here", cookie, nil, nil, 404},
		{"other method", "DELETE", "/login", "", nil, nil, 404},
		{"wrong password", "POST", "/login", "", url.Values{"username": {alice}, "password": {"nope"}}, nil, 401},
		{"cross-origin", "POST", "/login", "", url.Values{"username": {alice}, "password": {alicePass}}, []string{"Origin", "https://evil.example"}, 403},
		{"good login", "POST", "/login", "", url.Values{"username": {alice}, "password": {alicePass}}, nil, 303},
		{"logout", "POST", "/logout", "", nil, nil, 303},
	} {
		r := e.do(t, tc.method, tc.path, tc.cookie, tc.form, tc.hdr...)
		if r.StatusCode != tc.code {
			t.Errorf("%s: %s, want %d", tc.what, r.Status, tc.code)
		}
		checkSecurityHeaders(t, tc.what, r, true)
	}
	r := e.do(t, "GET", "/static/style.css", "", nil)
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Errorf("style sheet: %s, %s", r.Status, r.Header.Get("Content-Type"))
	}
	checkSecurityHeaders(t, "style sheet", r, false)
}

func TestLoginSetsSessionCookie(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(t, "POST", "/login", "", url.Values{"username": {alice}, "password": {alicePass}})
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Fatalf("login: %s, Location %q", r.Status, r.Header.Get("Location"))
	}
	c := r.sessionCookie()
	if c == nil {
		t.Fatalf("no %s cookie in %q", cookieName, r.Header.Values("Set-Cookie"))
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %q: want Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", r.Header.Get("Set-Cookie"))
	}
	if len(c.Value) != 43 { // 256 bits, base64url without padding
		t.Errorf("session ID %q is not 256 bits in base64url", c.Value)
	}
	if !e.loggedIn(t, c.Value) {
		t.Errorf("the new session is not logged in")
	}
	if e.loggedIn(t, "") {
		t.Errorf("logged in without a cookie")
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	e := newEnv(t, nil)
	for _, f := range []url.Values{
		{"username": {alice}, "password": {"wrong"}},
		{"username": {"nobody@example.test"}, "password": {alicePass}},
	} {
		r := e.do(t, "POST", "/login", "", f)
		if r.StatusCode != http.StatusUnauthorized || r.sessionCookie() != nil || !strings.Contains(r.body, "Wrong email address or password") {
			t.Errorf("login %v: %s, cookie %v", f, r.Status, r.sessionCookie())
		}
	}
}

// TestWebFailuresCountInSharedThrottle: failures over the web are counted
// by the Authenticator's throttle, the one IMAP, POP3 and SMTP AUTH use
// (core/server passes the same instance; TestWebSharesLoginThrottle there
// shows it with IMAP), and failures counted there stop the web too.
func TestWebFailuresCountInSharedThrottle(t *testing.T) {
	e := newEnv(t, nil) // MaxPerIP 3
	loopback := netip.MustParseAddr("127.0.0.1")
	for i := range 3 {
		if !e.authn.Throttle.Allowed(loopback, alice) {
			t.Fatalf("throttled after %d failures, want 3", i)
		}
		e.do(t, "POST", "/login", "", url.Values{"username": {alice}, "password": {"wrong"}})
	}
	if e.authn.Throttle.Allowed(loopback, alice) {
		t.Fatalf("3 web failures did not count in the shared throttle")
	}
	r := e.do(t, "POST", "/login", "", url.Values{"username": {alice}, "password": {alicePass}})
	if r.StatusCode != http.StatusTooManyRequests || r.sessionCookie() != nil {
		t.Errorf("login with the right password after the limit: %s, cookie %v, want 429 and none", r.Status, r.sessionCookie())
	}

	// The other way round: failures elsewhere (as IMAP records them).
	e = newEnv(t, nil)
	for range 3 {
		e.authn.Throttle.Failed(loopback, "")
	}
	if r := e.do(t, "POST", "/login", "", url.Values{"username": {alice}, "password": {alicePass}}); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("web login after 3 failures elsewhere: %s, want 429", r.Status)
	}
}

func TestCrossOriginPostRefused(t *testing.T) {
	e := newEnv(t, nil)
	cookie := e.login(t, "")
	good := url.Values{"username": {alice}, "password": {alicePass}}
	for _, hdr := range [][]string{
		{"Origin", "https://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site", "Origin", "https://other.example.test"},
	} {
		r := e.do(t, "POST", "/login", "", good, hdr...)
		if r.StatusCode != http.StatusForbidden || r.sessionCookie() != nil {
			t.Errorf("cross-origin login %q: %s, cookie %v, want 403 and none", hdr, r.Status, r.sessionCookie())
		}
		r = e.do(t, "POST", "/logout", cookie, nil, hdr...)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("cross-origin logout %q: %s, want 403", hdr, r.Status)
		}
	}
	if !e.loggedIn(t, cookie) {
		t.Errorf("a refused cross-origin logout ended the session")
	}
	// The same-origin requests a browser sends pass.
	r := e.do(t, "POST", "/login", "", good, "Sec-Fetch-Site", "same-origin", "Origin", e.base)
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin login: %s, want 303", r.Status)
	}
}

func TestNoSessionFixation(t *testing.T) {
	e := newEnv(t, nil)
	planted := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	after := e.login(t, planted)
	if after == planted {
		t.Fatalf("login kept the session ID set before it")
	}
	if e.loggedIn(t, planted) {
		t.Errorf("the planted ID is logged in")
	}
	// Logging in again over a live session replaces it too.
	again := e.login(t, after)
	if again == after {
		t.Fatalf("a second login kept the session ID")
	}
	if e.loggedIn(t, after) || !e.loggedIn(t, again) {
		t.Errorf("after a second login, the old ID is still live or the new one is not")
	}
}

func TestNoOpenRedirect(t *testing.T) {
	e := newEnv(t, nil)
	for next, want := range map[string]string{
		"https://evil.example":       "/",
		"//evil.example/":            "/",
		"/\\evil.example":            "/",
		"/\t/evil.example":           "/",
		"/\r\n/evil.example":         "/",
		"javascript:alert(1)":        "/",
		"evil.example":               "/",
		"":                           "/",
		"/folder?name=INBOX&page=1":  "/folder?name=INBOX&page=1",
		"/folder?name=%2F%2Fevil.ex": "/folder?name=%2F%2Fevil.ex",
	} {
		f := url.Values{"username": {alice}, "password": {alicePass}, "next": {next}}
		r := e.do(t, "POST", "/login", "", f)
		if got := r.Header.Get("Location"); r.StatusCode != http.StatusSeeOther || got != want {
			t.Errorf("login with next %q: %s to %q, want 303 to %q", next, r.Status, got, want)
		}
	}
	r := e.do(t, "GET", "/login?next="+url.QueryEscape("https://evil.example"), "", nil)
	if r.StatusCode != http.StatusOK || strings.Contains(r.body, "evil.example") {
		t.Errorf("the login form carries the foreign next along: %s\n%s", r.Status, r.body)
	}
	cookie := e.login(t, "")
	r = e.do(t, "GET", "/login?next="+url.QueryEscape("//evil.example"), cookie, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Errorf("logged-in GET /login?next=//evil.example: %s to %q, want 303 to /", r.Status, r.Header.Get("Location"))
	}
	// A page asked for while logged out comes back after login.
	r = e.do(t, "GET", "/folder?name=INBOX", "", nil)
	if loc := r.Header.Get("Location"); loc != "/login?next="+url.QueryEscape("/folder?name=INBOX") {
		t.Errorf("logged-out folder page sends to %q", loc)
	}
}

func TestLogoutEndsSession(t *testing.T) {
	e := newEnv(t, nil)
	cookie := e.login(t, "")
	other := e.login(t, "") // another browser of alice's
	r := e.do(t, "POST", "/logout", cookie, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
		t.Errorf("logout: %s to %q", r.Status, r.Header.Get("Location"))
	}
	if c := r.sessionCookie(); c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("logout does not clear the cookie: %q", r.Header.Get("Set-Cookie"))
	}
	if e.loggedIn(t, cookie) {
		t.Errorf("the old cookie still works after logout")
	}
	if !e.loggedIn(t, other) {
		t.Errorf("logout ended another session too")
	}
}

func TestSessionTimeouts(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.IdleTimeout, o.MaxLifetime = 10*time.Minute, time.Hour })
	e.fakeClock()
	cookie := e.login(t, "")
	for range 5 { // used every 9 minutes: stays
		e.clock = e.clock.Add(9 * time.Minute)
		if !e.loggedIn(t, cookie) {
			t.Fatalf("session ended while in use, %v after login", 45*time.Minute)
		}
	}
	e.clock = e.clock.Add(10 * time.Minute)
	if e.loggedIn(t, cookie) {
		t.Errorf("session still live after 10 idle minutes")
	}

	cookie = e.login(t, "")
	for i := range 6 {
		e.clock = e.clock.Add(9 * time.Minute)
		if !e.loggedIn(t, cookie) {
			t.Fatalf("session ended after %d minutes", 9*(i+1))
		}
	}
	e.clock = e.clock.Add(7 * time.Minute) // 61 minutes after login
	if e.loggedIn(t, cookie) {
		t.Errorf("session still live past max_lifetime")
	}
}

// TestSessionIdleTimeoutReal uses the real clock with a short
// idle_timeout: only "expired after waiting longer" is checked, never
// how fast anything is.
func TestSessionIdleTimeoutReal(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.IdleTimeout = 200 * time.Millisecond })
	cookie := e.login(t, "")
	time.Sleep(300 * time.Millisecond)
	if e.loggedIn(t, cookie) {
		t.Errorf("session still live after idle_timeout")
	}
}

func TestFoldersAndMessages(t *testing.T) {
	e := newEnv(t, nil)
	for i := range pageSize + 2 {
		body := fmt.Sprintf("From: <script>x</script>@remote.test\r\nSubject: msg %d <b>bold</b>\r\n\r\nhi\r\n", i)
		if _, _, err := e.st.Deliver(store.Delivery{UserID: e.user.ID, Body: strings.NewReader(body), Summary: store.ParseSummary(strings.NewReader(body))}); err != nil {
			t.Fatal(err)
		}
	}
	cookie := e.login(t, "")
	r := e.do(t, "GET", "/", cookie, nil)
	if !strings.Contains(r.body, `<a href="/folder?name=INBOX">INBOX</a></td><td>52</td><td>52</td>`) || !strings.Contains(r.body, "Junk") {
		t.Errorf("folder list:\n%s", r.body)
	}
	r = e.do(t, "GET", "/folder?name=INBOX", cookie, nil)
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, "<b>") || !strings.Contains(r.body, "&lt;script&gt;") {
		t.Errorf("message list not escaped:\n%s", r.body)
	}
	i51, i0 := strings.Index(r.body, "msg 51 "), strings.Index(r.body, "msg 2 ")
	if i51 < 0 || i0 < 0 || i51 > i0 || strings.Contains(r.body, "msg 1 ") || !strings.Contains(r.body, "page=2") {
		t.Errorf("page 1 is not the newest %d, newest first, with a link to page 2:\n%s", pageSize, r.body)
	}
	r = e.do(t, "GET", "/folder?name=INBOX&page=2", cookie, nil)
	if !strings.Contains(r.body, "msg 1 ") || !strings.Contains(r.body, "msg 0 ") || strings.Contains(r.body, "msg 2 ") {
		t.Errorf("page 2:\n%s", r.body)
	}
	for _, p := range []string{"3", "0", "x"} {
		if r := e.do(t, "GET", "/folder?name=INBOX&page="+p, cookie, nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("page %s: %s, want 404", p, r.Status)
		}
	}
}

func TestListenAllOrNothing(t *testing.T) {
	setup(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(Options{
		Listen: []string{freeAddr, busy.Addr().String()},
		TLS:    &tls.Config{Certificates: []tls.Certificate{testCert}},
		Auth:   &auth.Authenticator{Users: st},
		Store:  st,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil || !strings.HasPrefix(err.Error(), "webmail: ") {
		t.Fatalf("Listen with a busy address = %v, want a webmail: error", err)
	}
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("the first address stayed bound: %v", err)
	}
	ln.Close()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after a failed Listen = %v", err)
	}
}

func TestNewNeedsTLS(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := New(Options{Listen: []string{"127.0.0.1:0"}, Auth: &auth.Authenticator{Users: st}, Store: st}); err == nil {
		t.Errorf("New without TLS = nil error")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/":             "/",
		"/a/b?c=d#e":    "/a/b?c=d#e",
		"//x":           "/",
		"/\\x":          "/",
		"http:/x":       "/",
		"/x\x00":        "/",
		"/%2F%2Fx":      "/%2F%2Fx",
		"https://x/":    "/",
		"///evil.examp": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConnectionLimitPerIP(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxConnectionsPerIP = 2 })
	addr := e.srv.Addrs()[0].String()
	conf := &tls.Config{InsecureSkipVerify: true}
	var open []*tls.Conn
	for range 2 {
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("connection within the limit: %v", err)
		}
		open = append(open, c)
	}
	if c, err := tls.Dial("tcp", addr, conf); err == nil {
		c.Close()
		t.Fatalf("a third connection from one address was served")
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second) // a safety ceiling
	for {
		c, err := tls.Dial("tcp", addr, conf)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection possible after one of the two closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	open[1].Close()
}

// TestShutdownDrains: Shutdown stops accepting at once, lets a request in
// progress finish, and returns when it has; with the grace period over,
// it cuts the connection and returns the context's error.
func TestShutdownDrains(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	e := newEnvWrapped(t, nil, func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				w.Write([]byte("done"))
				return
			}
			inner.ServeHTTP(w, r)
		})
	})
	addr := e.srv.Addrs()[0].String()
	got := make(chan string, 1)
	go func() {
		resp, err := e.client.Get(e.base + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second) // a safety ceiling
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("still accepting connections after Shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a request was in progress", err)
	default:
	}
	close(release)
	if body := <-got; body != "done" {
		t.Errorf("the request in progress got %q, want done", body)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}

	// Past the grace period.
	e = newEnvWrapped(t, nil, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			<-r.Context().Done()
		})
	})
	go func() {
		resp, err := e.client.Get(e.base + "/")
		if err == nil {
			resp.Body.Close()
		}
		got <- ""
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown past the grace period = %v, want context.Canceled", err)
	}
	<-got
}

func TestRemovedUserLoggedOut(t *testing.T) {
	e := newEnv(t, nil)
	cookie := e.login(t, "")
	if err := e.st.RemoveUser(alice); err != nil {
		t.Fatal(err)
	}
	if e.loggedIn(t, cookie) {
		t.Errorf("the session of a removed user still shows the folders")
	}
	if user := e.srv.sessions.get(cookie); user != "" {
		t.Errorf("the session of a removed user is still kept, for %q", user)
	}
}

// TestPasswordChangeOrDisableEndsSessions: a password changed since login
// (by the user elsewhere, the administrator or a reset), or the account
// disabled, ends the web sessions of that account at their next request;
// logging in again with the new password works.
func TestPasswordChangeOrDisableEndsSessions(t *testing.T) {
	e := newEnv(t, nil)
	cookie := e.login(t, "")
	other := e.login(t, "")
	if !e.loggedIn(t, cookie) || !e.loggedIn(t, other) {
		t.Fatal("not logged in")
	}
	hash, err := auth.HashPassword("a whole new password")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetPasswordHash(alice, hash); err != nil {
		t.Fatal(err)
	}
	if e.loggedIn(t, cookie) || e.loggedIn(t, other) {
		t.Errorf("sessions from before a password change still show the folders")
	}
	if user := e.srv.sessions.get(cookie); user != "" {
		t.Errorf("the session from before the password change is still kept, for %q", user)
	}

	// Set the old password back: a session started since is kept
	// across a change that is no change at all, and ends when the
	// account is disabled.
	if err := e.st.SetPasswordHash(alice, aliceHash); err != nil {
		t.Fatal(err)
	}
	fresh := e.login(t, "")
	if err := e.st.SetPasswordHash(alice, aliceHash); err != nil {
		t.Fatal(err)
	}
	if !e.loggedIn(t, fresh) {
		t.Fatal("a session ended although the password is the same")
	}
	if err := e.st.SetDisabled(alice, true); err != nil {
		t.Fatal(err)
	}
	if e.loggedIn(t, fresh) {
		t.Errorf("the session of a disabled user still shows the folders")
	}
}
