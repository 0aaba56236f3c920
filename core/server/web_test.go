package server

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/store"
)

// webClient is an HTTPS client for the self-signed test server that
// does not follow redirects.
func webClient(t *testing.T) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second, // a safety ceiling
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestWebWiring starts Sluice with a web listener and logs in over it.
func TestWebWiring(t *testing.T) {
	cfg := testConfig(t)
	cfg.Web.Listen = []string{freePort(t)}
	s := start(t, cfg)
	addUser(t, s, "alice@example.test", "secret")
	if s.Web() == nil || len(s.Web().Addrs()) != 1 {
		t.Fatalf("web listener not started")
	}
	c := webClient(t)
	base := "https://" + s.Web().Addrs()[0].String()
	resp, err := c.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /login: %s %s, CSP %q", resp.Proto, resp.Status, resp.Header.Get("Content-Security-Policy"))
	}
	resp, err = c.PostForm(base+"/login", url.Values{"username": {"alice@example.test"}, "password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Errorf("login: %s, cookies %v", resp.Status, resp.Cookies())
	}
}

func TestNoWebListenerByDefault(t *testing.T) {
	s := start(t, testConfig(t))
	if s.Web() != nil {
		t.Errorf("Web() = %v without web listeners, want nil", s.Web())
	}
}

func addUser(t *testing.T, s *Server, addr, pass string) store.User {
	t.Helper()
	hash, err := auth.HashPassword(pass)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.data.Store.AddUser(store.NewUser{Address: addr, PasswordHash: hash, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestWebSharesLoginThrottle: passwords guessed over the web count
// against the same per-address budget as IMAP logins, and the other way
// round: the server gives both the one Authenticator.
func TestWebSharesLoginThrottle(t *testing.T) {
	cfg := testConfig(t)
	cfg.Web.Listen = []string{freePort(t)}
	cfg.IMAP.ListenTLS = []string{freePort(t)}
	cfg.Auth.MaxFailuresPerIP = 3
	s := start(t, cfg)
	addUser(t, s, "alice@example.test", "secret")
	base := "https://" + s.Web().Addrs()[0].String()
	c := webClient(t)
	webLogin := func(pass string) int {
		t.Helper()
		resp, err := c.PostForm(base+"/login", url.Values{"username": {"alice@example.test"}, "password": {pass}})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	imapLogin := func(pass string) error {
		t.Helper()
		ic, err := imapclient.DialTLS(s.IMAP().Addrs(true)[0].String(), &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer ic.Close()
		return ic.Login("alice@example.test", pass).Wait()
	}
	for range 3 {
		if code := webLogin("wrong"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password over the web: %d, want 401", code)
		}
	}
	err := imapLogin("secret")
	if err == nil || !strings.Contains(err.Error(), "Too many failed logins") {
		t.Errorf("IMAP login after 3 web failures = %v, want throttled", err)
	}

	// And the other way: IMAP failures stop the web.
	cfg = testConfig(t)
	cfg.Web.Listen = []string{freePort(t)}
	cfg.IMAP.ListenTLS = []string{freePort(t)}
	cfg.Auth.MaxFailuresPerIP = 3
	s = start(t, cfg)
	addUser(t, s, "alice@example.test", "secret")
	base = "https://" + s.Web().Addrs()[0].String()
	for range 3 {
		if err := imapLogin("wrong"); err == nil {
			t.Fatalf("wrong password over IMAP = %v", err)
		}
	}
	if code := webLogin("secret"); code != http.StatusTooManyRequests {
		t.Errorf("web login after 3 IMAP failures: %d, want 429", code)
	}
}

func TestChangedOutsidePipelinesWeb(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Web.IdleTimeout *= 2
	if got := changedOutsidePipelines(a, b); !slices.Equal(got, []string{"web"}) {
		t.Errorf("changedOutsidePipelines = %q, want [web]", got)
	}
}
