package main

// End-to-end test of disabled users: the real sluice binary, logins over
// IMAP and POP3 (mailclient.py) and SMTP AUTH (swaks), mail through the
// MX port.

import (
	"regexp"
	"slices"
	"testing"
)

// TestIntegrationDisabledUser: a disabled user's right password is
// refused over IMAP, POP3 and SMTP AUTH with the very reply a wrong
// password gets, mail to them is still delivered, enabling them lets them
// log in again, and the server's audit log names who disabled whom.
func TestIntegrationDisabledUser(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newMailAccess(t, "")
	const user, pass = "alice@example.test", "alice secret"
	in.addUser(user, pass)
	if out := in.cli("", "user", "disable", user); out != "disabled "+user+": logins are refused; mail is still delivered\n" {
		t.Fatalf("user disable: got %q", out)
	}
	if !regexp.MustCompile(`msg="admin action" caller=unix:\S+ method=user\.disable target=` + regexp.QuoteMeta(user) + ` result=ok`).MatchString(in.logs()) {
		t.Errorf("server log: no audit line for user.disable:\n%s", in.logs())
	}

	for _, proto := range []struct{ name, addr string }{{"imap", in.imaps}, {"pop3", in.pop3s}} {
		c := dialClient(t, proto.name+" disabled", proto.name, proto.addr, "tls")
		right := c.do(map[string]any{"op": "login", "user": user, "password": pass})
		c2 := dialClient(t, proto.name+" wrong", proto.name, proto.addr, "tls")
		wrong := c2.do(map[string]any{"op": "login", "user": user, "password": "wrong"})
		if right.Error == "" || right.Error != wrong.Error || right.Exception != wrong.Exception {
			t.Errorf("%s: login of a disabled user: got %s, want what a wrong password gets: %s", proto.name, right.raw, wrong.raw)
		}
	}
	auth := func(pw string) swaksRun {
		return swaks(t, in.subs, "--tlsc", "--auth", "PLAIN", "--auth-user", user, "--auth-password", pw, "--from", user, "--to", user)
	}
	right, wrong := auth(pass), auth("wrong")
	if right.code != 28 || !slices.Equal(right.replies(), wrong.replies()) {
		t.Errorf("SMTP AUTH of a disabled user: got exit %d, replies %q; want exit 28 and the replies to a wrong password %q", right.code, right.replies(), wrong.replies())
	}

	in.deliverRaw(t, "bob@remote.test", user, testMessage("bob@remote.test", user, "Still delivered", "disabled-1@client.test", "Hello."))
	if ms := in.waitMsgs(user, 1); !slices.ContainsFunc(ms, func(m mailMsg) bool { return m.Subject == "Still delivered" }) {
		t.Errorf("INBOX of a disabled user: got %+v, want the message", ms)
	}
	if out := in.cli("", "user", "ls"); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(user) + ` .* disabled$`).MatchString(out) {
		t.Errorf("user ls: got\n%s\nwant %s disabled", out, user)
	}

	in.cli("", "user", "enable", user)
	imapLogin(t, "imap enabled", in.imaps, user, pass)
	pop3Login(t, "pop3 enabled", in.pop3s, user, pass)
	if r := auth(pass); r.code != 0 {
		t.Errorf("SMTP AUTH after user enable: got exit %d, replies %q", r.code, r.replies())
	}
}
