package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestIntegrationDevConfigWeb: 'make run' serves the web interface on
// https://127.0.0.1:8443/ (the README says so): HTTP/2 over TLS with the
// self-signed certificate, the login form, and a user logging in.
func TestIntegrationDevConfigWeb(t *testing.T) {
	t.Parallel()
	in := devInstance(t)
	if in.web == "" {
		t.Fatalf("configs/dev.yaml has no web listener on 127.0.0.1:8443")
	}
	in.start()
	in.addUser("alice@example.test", "s3cret pass")
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second, // a safety ceiling
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := "https://" + in.web
	get := func(path string, cookies ...*http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for _, ck := range cookies {
			req.AddCookie(ck)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/login")
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || !strings.Contains(body, `name="password"`) || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("GET /login: %s %s\n%s", resp.Proto, resp.Status, body)
	}
	resp, err := c.PostForm(base+"/login", url.Values{"username": {"alice@example.test"}, "password": {"s3cret pass"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %s, cookies %v\n%s", resp.Status, resp.Cookies(), in.logs())
	}
	resp, body = get("/", resp.Cookies()[0])
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "INBOX") {
		t.Errorf("GET / after login: %s\n%s", resp.Status, body)
	}
}
