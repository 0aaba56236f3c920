package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// testFilter refuses MAIL FROM spammer@ and a message whose Subject is
// "reject", adds X-Test to the others, and counts what it learns.
type testFilter struct {
	spam, ham *atomic.Int32
}

func (testFilter) Configure(context.Context, sdk.Config) error { return nil }

func (testFilter) Check(_ context.Context, m *sdk.Message) (sdk.Verdict, error) {
	io.Copy(io.Discard, m.Data)
	if m.Header.Get("Subject") == "reject" {
		return sdk.Rejected(554, "5.7.1", "Bad content", "subject says reject"), nil
	}
	return sdk.Verdict{AddHeaders: []sdk.HeaderField{{Name: "X-Test", Value: "checked"}}}, nil
}

func (testFilter) CheckMail(_ context.Context, e *sdk.Envelope) (sdk.Verdict, error) {
	if strings.HasPrefix(e.MailFrom, "spammer@") {
		return sdk.Rejected(550, "5.7.1", "Sender refused", "spammer"), nil
	}
	return sdk.Accept(), nil
}

func (f testFilter) Learn(_ context.Context, m *sdk.Message, spam bool) error {
	io.Copy(io.Discard, m.Data)
	if spam {
		f.spam.Add(1)
	} else {
		f.ham.Add(1)
	}
	return nil
}

// withPipelines gives the Service an inbound pipeline with a testFilter
// stage that learns, and an outbound one with a stage that does not.
func withPipelines(e *env) testFilter {
	f := testFilter{spam: new(atomic.Int32), ham: new(atomic.Int32)}
	hooks := map[verdict.Hook]bool{verdict.HookMail: true, verdict.HookData: true}
	set := pipeline.NewSet(
		&pipeline.Pipeline{Name: "inbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
			Name: "test", Filter: f, Hooks: hooks, Timeout: 10 * time.Second, OnError: "tempfail", Learns: true}}},
		&pipeline.Pipeline{Name: "outbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
			Name: "plain", Filter: f, Hooks: hooks, Timeout: 10 * time.Second, OnError: "tempfail"}}},
	)
	h := pipeline.NewHolder(set)
	e.t.Cleanup(func() { h.Close(5 * time.Second) })
	e.svc.Pipelines = h
	return f
}

const testMessage = "From: <x@remote.test>\r\nTo: <alice@example.test>\r\nSubject: hello\r\n\r\nbody\r\n"

// adminCase is one call of a method: setup prepares the environment,
// params (or paramsFn, for params that depend on the setup) is sent, and
// either the call fails with code and a message containing msg, or check
// looks at the result and the environment. A failing case may have a
// check too, which sees the environment after the failure (and no result).
type adminCase struct {
	name     string
	setup    func(e *env)
	method   string
	params   any
	paramsFn func(e *env) any
	code     string
	msg      string
	check    func(t *testing.T, e *env, res json.RawMessage)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func i64(v int64) *int64 { return &v }

func wantUser(t *testing.T, e *env, addr string) store.User {
	t.Helper()
	u, err := e.st.User(addr)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func wantPassword(t *testing.T, e *env, addr, pw string, ok bool) {
	t.Helper()
	got, err := auth.VerifyPassword(wantUser(t, e, addr).PasswordHash, pw)
	if err != nil || got != ok {
		t.Errorf("password %q of %s verifies: %v (%v), want %v", pw, addr, got, err, ok)
	}
}

// wantNoUser checks that a refused user.add created nothing.
func wantNoUser(addr string) func(t *testing.T, e *env, res json.RawMessage) {
	return func(t *testing.T, e *env, res json.RawMessage) {
		t.Helper()
		if _, err := e.st.User(addr); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("user %s after a refused user.add: %v, want not found", addr, err)
		}
	}
}

func wantMessage(t *testing.T, e *env, id string) *queue.Message {
	t.Helper()
	m, err := e.q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantRaw(t *testing.T, res json.RawMessage, want string) {
	t.Helper()
	if string(res) != want {
		t.Errorf("result %s, want %s", res, want)
	}
}

// orphan writes a message file no record refers to in e's store and
// returns its path; with a nil e, it returns the path relative to the
// environment's directory.
func orphan(e *env) string {
	rel := filepath.Join("store", "blobs", "abcd", "ef", "abcdef0123456789")
	if e == nil {
		return rel
	}
	p := filepath.Join(e.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("Subject: lost\r\n\r\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func deliver(e *env, user store.User, subject string) {
	e.t.Helper()
	_, _, err := e.st.Deliver(store.Delivery{UserID: user.ID, Body: strings.NewReader("Subject: " + subject + "\r\n\r\nbody\r\n"),
		Summary: store.Summary{From: "x@remote.test", To: user.Address, Subject: subject, MessageID: "<1@remote.test>"}})
	if err != nil {
		e.t.Fatal(err)
	}
}

var adminCases = []adminCase{
	// Dispatch.
	{name: "unknown method", method: "user.frobnicate", code: CodeNoMethod, msg: `admin: unknown method "user.frobnicate"`},
	{name: "empty method", method: "", code: CodeNoMethod, msg: "unknown method"},

	// status
	{name: "status without a server", method: "status", check: func(t *testing.T, e *env, res json.RawMessage) {
		st := unmarshal[Status](t, res)
		if st.Running || st.PID != 0 || !st.Started.IsZero() || st.Queue != 0 || st.QueueHold != 0 || st.Quarantine != 0 || st.Plugins != nil {
			t.Errorf("status %+v", st)
		}
	}},
	{name: "status counts", setup: func(e *env) {
		e.svc.Started = time.Now().Add(-time.Minute)
		e.enqueue("a@remote.test", queue.StatusActive, "b@remote.test")
		e.enqueue("a@remote.test", queue.StatusHold, "b@remote.test")
		e.enqueue("a@remote.test", queue.StatusQuarantine, "b@remote.test")
	}, method: "status", check: func(t *testing.T, e *env, res json.RawMessage) {
		st := unmarshal[Status](t, res)
		if !st.Running || st.PID != os.Getpid() || !st.Started.Equal(e.svc.Started) || st.Queue != 3 || st.QueueHold != 1 || st.Quarantine != 1 {
			t.Errorf("status %+v", st)
		}
	}},

	// domain.add
	{name: "domain.add", method: "domain.add", params: DomainParams{Name: "Other.TEST"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if d := unmarshal[store.Domain](t, res); d.Name != "other.test" || d.Created.IsZero() {
			t.Errorf("domain %+v", d)
		}
		if ok, _ := e.st.IsLocalDomain("other.test"); !ok {
			t.Error("other.test is not local")
		}
	}},
	{name: "domain.add duplicate", method: "domain.add", params: DomainParams{Name: "EXAMPLE.test"}, code: CodeExists, msg: "example.test"},
	{name: "domain.add not a name", method: "domain.add", params: DomainParams{Name: "not a domain"}, code: CodeInvalid, msg: "not a domain name"},
	{name: "domain.add address literal", method: "domain.add", params: DomainParams{Name: "[127.0.0.1]"}, code: CodeInvalid, msg: "not a domain name"},
	{name: "domain.add empty", method: "domain.add", code: CodeInvalid, msg: "not a domain name"},
	{name: "domain.add unknown parameter", method: "domain.add", params: raw(`{"domain":"other.test"}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "domain.add parameter of the wrong type", method: "domain.add", params: raw(`{"name":5}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "domain.add params not an object", method: "domain.add", params: raw(`"other.test"`), code: CodeInvalid, msg: "admin: bad parameters"},

	// domain.ls
	{name: "domain.ls", setup: func(e *env) { e.st.AddDomain("b.test") }, method: "domain.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		ds := unmarshal[[]store.Domain](t, res)
		if len(ds) != 2 || ds[0].Name != "b.test" || ds[1].Name != "example.test" {
			t.Errorf("domains %+v", ds)
		}
	}},
	{name: "domain.ls none", setup: func(e *env) { e.st.RemoveDomain("example.test") }, method: "domain.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, "[]")
	}},

	// domain.rm
	{name: "domain.rm", method: "domain.rm", params: DomainParams{Name: "Example.Test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if ok, _ := e.st.IsLocalDomain("example.test"); ok {
			t.Error("example.test is still local")
		}
	}},
	{name: "domain.rm unknown", method: "domain.rm", params: DomainParams{Name: "nowhere.test"}, code: CodeNotFound, msg: "nowhere.test"},
	{name: "domain.rm with a user", setup: func(e *env) { e.user("alice@example.test") }, method: "domain.rm", params: DomainParams{Name: "example.test"}, code: CodeNotEmpty, msg: "alice@example.test"},
	{name: "domain.rm with an alias", setup: func(e *env) { e.st.AddAlias("info@example.test", []string{"x@remote.test"}) }, method: "domain.rm", params: DomainParams{Name: "example.test"}, code: CodeNotEmpty, msg: "info@example.test"},

	// user.add
	{name: "user.add", method: "user.add", params: UserAddParams{Address: "Alice@Example.TEST", Password: "s3cret and more"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if strings.Contains(string(res), "argon2") || strings.Contains(string(res), "password") {
			t.Errorf("the result shows the password hash: %s", res)
		}
		u := unmarshal[UserView](t, res)
		if u.ID == 0 || u.Address != "alice@example.test" || u.Quota != testQuota || u.Used != 0 || u.Created.IsZero() {
			t.Errorf("user %+v", u)
		}
		wantPassword(t, e, "alice@example.test", "s3cret and more", true)
		mbs, err := e.st.Mailboxes(u.ID)
		if err != nil || len(mbs) == 0 {
			t.Errorf("mailboxes %v, %v", mbs, err)
		}
	}},
	{name: "user.add without quota", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wide open fields", Quota: i64(0)}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := unmarshal[UserView](t, res); u.Quota != 0 || wantUser(t, e, "alice@example.test").Quota != 0 {
			t.Errorf("user %+v", u)
		}
	}},
	{name: "user.add with quota", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wide open fields", Quota: i64(5000)}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := unmarshal[UserView](t, res); u.Quota != 5000 || wantUser(t, e, "alice@example.test").Quota != 5000 {
			t.Errorf("user %+v", u)
		}
	}},
	// A negative quota is refused, as by user.set-quota; it used to give
	// the default quota without a word.
	{name: "user.add negative quota", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wide open fields", Quota: i64(-1)}, code: CodeInvalid, msg: "admin: negative quota"},
	{name: "user.add quota as text", method: "user.add", params: raw(`{"address":"alice@example.test","password":"wide open fields","quota":"10M"}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "user.add quota not whole", method: "user.add", params: raw(`{"address":"alice@example.test","password":"wide open fields","quota":1.5}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "user.add with alternate", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wide open fields", Alternate: "alice@remote.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := unmarshal[UserView](t, res); u.Alternate != "alice@remote.test" {
			t.Errorf("user %+v", u)
		}
	}},
	{name: "user.add bad alternate", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wide open fields", Alternate: "nonsense"}, code: CodeInvalid},
	{name: "user.add without password", method: "user.add", params: UserAddParams{Address: "alice@example.test"}, code: CodeInvalid, msg: "admin: a password is required"},
	{name: "user.add password too long", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: strings.Repeat("x", auth.MaxPasswordLength+1)}, code: CodeInvalid, msg: "longer than"},
	{name: "user.add password too short", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "x"}, code: CodeInvalid, msg: "auth: the password is too short: use at least 10 characters (it has 1)", check: wantNoUser("alice@example.test")},
	{name: "user.add password nine characters", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wbq-7zk-p"}, code: CodeInvalid, msg: "too short", check: wantNoUser("alice@example.test")},
	{name: "user.add password ten characters", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "wbq-7zk-pl"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice@example.test", "wbq-7zk-pl", true)
	}},
	{name: "user.add password is the address", method: "user.add", params: UserAddParams{Address: "alice.smith@example.test", Password: "Alice.Smith@Example.test"}, code: CodeInvalid, msg: "auth: the password is the address itself", check: wantNoUser("alice.smith@example.test")},
	{name: "user.add password is the local part", method: "user.add", params: UserAddParams{Address: "alice.smith@example.test", Password: "ALICE.SMITH"}, code: CodeInvalid, msg: "auth: the password is the address itself", check: wantNoUser("alice.smith@example.test")},
	{name: "user.add common password", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "Password123"}, code: CodeInvalid, msg: "auth: the password is one of the most common passwords", check: wantNoUser("alice@example.test")},
	{name: "user.add configured minimum", setup: func(e *env) { e.svc.PasswordPolicy.MinLength = 4 }, method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "k9#z"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice@example.test", "k9#z", true)
	}},
	{name: "user.add configured minimum, shorter", setup: func(e *env) { e.svc.PasswordPolicy.MinLength = 4 }, method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "k9#"}, code: CodeInvalid, msg: "at least 4 characters", check: wantNoUser("alice@example.test")},
	{name: "user.add duplicate", setup: func(e *env) { e.user("alice@example.test") }, method: "user.add", params: UserAddParams{Address: "ALICE@example.test", Password: "wide open fields"}, code: CodeExists, msg: "alice@example.test"},
	{name: "user.add over an alias", setup: func(e *env) { e.st.AddAlias("info@example.test", []string{"x@remote.test"}) }, method: "user.add", params: UserAddParams{Address: "info@example.test", Password: "wide open fields"}, code: CodeExists, msg: "info@example.test"},
	{name: "user.add domain not local", method: "user.add", params: UserAddParams{Address: "alice@elsewhere.test", Password: "wide open fields"}, code: CodeNotLocal, msg: "elsewhere.test"},
	{name: "user.add not an address", method: "user.add", params: UserAddParams{Address: "alice", Password: "wide open fields"}, code: CodeInvalid},
	{name: "user.add with the recipient delimiter", method: "user.add", params: UserAddParams{Address: "alice+x@example.test", Password: "wide open fields"}, code: CodeInvalid, msg: "delimiter"},

	// user.ls
	{name: "user.ls none", method: "user.ls", check: func(t *testing.T, e *env, res json.RawMessage) { wantRaw(t, res, "[]") }},
	{name: "user.ls", setup: func(e *env) {
		e.user("bob@example.test")
		alice := e.user("alice@example.test")
		deliver(e, alice, "hi")
		e.st.AddDomain("other.test")
		e.user("carol@other.test")
	}, method: "user.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		if strings.Contains(string(res), "argon2") {
			t.Errorf("the result shows password hashes: %s", res)
		}
		us := unmarshal[[]UserView](t, res)
		var addrs []string
		for _, u := range us {
			addrs = append(addrs, u.Address)
			if (u.Address == "alice@example.test") != (u.Used > 0) {
				t.Errorf("user %+v", u)
			}
		}
		if !slices.Equal(addrs, []string{"alice@example.test", "bob@example.test", "carol@other.test"}) {
			t.Errorf("users %v", addrs)
		}
	}},
	{name: "user.ls domain", setup: func(e *env) {
		e.user("alice@example.test")
		e.st.AddDomain("other.test")
		e.user("carol@other.test")
	}, method: "user.ls", params: UserListParams{Domain: "Other.Test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if us := unmarshal[[]UserView](t, res); len(us) != 1 || us[0].Address != "carol@other.test" {
			t.Errorf("users %+v", us)
		}
	}},

	// user.passwd
	{name: "user.passwd", setup: func(e *env) { e.user("alice@example.test") }, method: "user.passwd", params: UserParams{Address: "Alice@example.test", Password: "a new one at last"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice@example.test", "a new one at last", true)
		wantPassword(t, e, "alice@example.test", testPassword, false)
	}},
	{name: "user.passwd too short", setup: func(e *env) { e.user("alice@example.test") }, method: "user.passwd", params: UserParams{Address: "alice@example.test", Password: "x"}, code: CodeInvalid, msg: "auth: the password is too short: use at least 10 characters", check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice@example.test", testPassword, true)
	}},
	{name: "user.passwd the local part", setup: func(e *env) { e.user("alice.smith@example.test") }, method: "user.passwd", params: UserParams{Address: "alice.smith@example.test", Password: "Alice.Smith"}, code: CodeInvalid, msg: "the address itself", check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice.smith@example.test", testPassword, true)
	}},
	{name: "user.passwd common password", setup: func(e *env) { e.user("alice@example.test") }, method: "user.passwd", params: UserParams{Address: "alice@example.test", Password: "QWERTYUIOP"}, code: CodeInvalid, msg: "one of the most common passwords", check: func(t *testing.T, e *env, res json.RawMessage) {
		wantPassword(t, e, "alice@example.test", testPassword, true)
	}},
	{name: "user.passwd unknown user", method: "user.passwd", params: UserParams{Address: "nobody@example.test", Password: "wide open fields"}, code: CodeNotFound, msg: "nobody@example.test"},
	{name: "user.passwd empty", setup: func(e *env) { e.user("alice@example.test") }, method: "user.passwd", params: UserParams{Address: "alice@example.test"}, code: CodeInvalid, msg: "admin: a password is required"},
	{name: "user.passwd unknown parameter", method: "user.passwd", params: raw(`{"address":"alice@example.test","passwd":"x"}`), code: CodeInvalid, msg: "admin: bad parameters"},

	// user.rm
	{name: "user.rm", setup: func(e *env) { deliver(e, e.user("alice@example.test"), "hi") }, method: "user.rm", params: UserParams{Address: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if _, err := e.st.User("alice@example.test"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("user after rm: %v", err)
		}
	}},
	{name: "user.rm unknown user", method: "user.rm", params: UserParams{Address: "nobody@example.test"}, code: CodeNotFound, msg: "nobody@example.test"},
	{name: "user.rm not an address", method: "user.rm", params: UserParams{Address: ""}, code: CodeInvalid},

	// user.set-alternate
	{name: "user.set-alternate", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-alternate", params: UserParams{Address: "alice@example.test", Alternate: "alice@remote.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Alternate != "alice@remote.test" {
			t.Errorf("alternate %q", u.Alternate)
		}
	}},
	{name: "user.set-alternate clears", setup: func(e *env) {
		e.user("alice@example.test")
		e.st.SetAlternate("alice@example.test", "alice@remote.test")
	}, method: "user.set-alternate", params: UserParams{Address: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Alternate != "" {
			t.Errorf("alternate %q", u.Alternate)
		}
	}},
	{name: "user.set-alternate own address", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-alternate", params: UserParams{Address: "alice@example.test", Alternate: "ALICE@example.test"}, code: CodeInvalid, msg: "differ"},
	{name: "user.set-alternate unknown user", method: "user.set-alternate", params: UserParams{Address: "nobody@example.test", Alternate: "x@remote.test"}, code: CodeNotFound, msg: "nobody@example.test"},

	// user.add --admin, user.set-admin, user.disable and user.enable, and
	// what user.ls shows of them
	{name: "user.add admin", method: "user.add", params: UserAddParams{Address: "alice@example.test", Password: "pw-long-enough", Admin: true}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := unmarshal[UserView](t, res); !u.Admin || u.Disabled {
			t.Errorf("result %+v, want admin", u)
		}
		if u := wantUser(t, e, "alice@example.test"); !u.Admin {
			t.Errorf("stored %+v, want admin", u)
		}
	}},
	{name: "user.set-admin", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-admin", params: UserParams{Address: "Alice@example.test", Admin: ptr(true)}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); !u.Admin {
			t.Errorf("stored %+v, want admin", u)
		}
	}},
	{name: "user.set-admin off", setup: func(e *env) {
		e.user("alice@example.test")
		e.st.SetAdmin("alice@example.test", true)
	}, method: "user.set-admin", params: raw(`{"address":"alice@example.test","admin":false}`), check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Admin {
			t.Errorf("stored %+v, want no admin", u)
		}
	}},
	{name: "user.set-admin unknown user", method: "user.set-admin", params: UserParams{Address: "nobody@example.test", Admin: ptr(true)}, code: CodeNotFound, msg: "nobody@example.test"},
	{name: "user.set-admin without admin", setup: func(e *env) {
		e.user("alice@example.test")
		e.st.SetAdmin("alice@example.test", true)
	}, method: "user.set-admin", params: UserParams{Address: "alice@example.test"}, code: CodeInvalid, msg: "admin true or false"},
	{name: "user.disable", setup: func(e *env) { e.user("alice@example.test") }, method: "user.disable", params: UserParams{Address: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); !u.Disabled {
			t.Errorf("stored %+v, want disabled", u)
		}
		a := &auth.Authenticator{Users: e.st}
		if _, err := a.Authenticate(context.Background(), netip.MustParseAddr("127.0.0.1"), "alice@example.test", testPassword); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("login of a disabled user = %v, want ErrInvalidCredentials", err)
		}
	}},
	{name: "user.enable", setup: func(e *env) {
		e.user("alice@example.test")
		e.st.SetDisabled("alice@example.test", true)
	}, method: "user.enable", params: UserParams{Address: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Disabled {
			t.Errorf("stored %+v, want enabled", u)
		}
		a := &auth.Authenticator{Users: e.st}
		if _, err := a.Authenticate(context.Background(), netip.MustParseAddr("127.0.0.1"), "alice@example.test", testPassword); err != nil {
			t.Errorf("login of an enabled user = %v", err)
		}
	}},
	{name: "user.disable unknown user", method: "user.disable", params: UserParams{Address: "nobody@example.test"}, code: CodeNotFound, msg: "nobody@example.test"},
	{name: "user.ls admin and disabled", setup: func(e *env) {
		e.user("alice@example.test")
		e.user("bob@example.test")
		e.st.SetAdmin("alice@example.test", true)
		e.st.SetDisabled("bob@example.test", true)
	}, method: "user.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		us := unmarshal[[]UserView](t, res)
		if len(us) != 2 || !us[0].Admin || us[0].Disabled || us[1].Admin || !us[1].Disabled {
			t.Errorf("users %+v, want alice admin and bob disabled", us)
		}
		if !strings.Contains(string(res), `"admin":false`) || !strings.Contains(string(res), `"disabled":false`) {
			t.Errorf("result %s does not show both fields for every user", res)
		}
	}},

	// user.set-quota
	{name: "user.set-quota", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-quota", params: UserParams{Address: "alice@example.test", Quota: 2048}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Quota != 2048 {
			t.Errorf("quota %d", u.Quota)
		}
	}},
	{name: "user.set-quota none", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-quota", params: UserParams{Address: "alice@example.test", Quota: 0}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if u := wantUser(t, e, "alice@example.test"); u.Quota != 0 {
			t.Errorf("quota %d", u.Quota)
		}
	}},
	{name: "user.set-quota negative", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-quota", params: UserParams{Address: "alice@example.test", Quota: -1}, code: CodeInvalid, msg: "negative quota"},
	{name: "user.set-quota as text", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-quota", params: raw(`{"address":"alice@example.test","quota":"1G"}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "user.set-quota too large", setup: func(e *env) { e.user("alice@example.test") }, method: "user.set-quota", params: raw(`{"address":"alice@example.test","quota":9223372036854775808}`), code: CodeInvalid, msg: "admin: bad parameters"},
	{name: "user.set-quota unknown user", method: "user.set-quota", params: UserParams{Address: "nobody@example.test", Quota: 1}, code: CodeNotFound, msg: "nobody@example.test"},

	// alias.add
	{name: "alias.add", method: "alias.add", params: AliasParams{Address: "Info@example.test", Targets: []string{"alice@example.test", "x@remote.test"}}, check: func(t *testing.T, e *env, res json.RawMessage) {
		al := unmarshal[store.Alias](t, res)
		if al.Address != "info@example.test" || !slices.Equal(al.Targets, []string{"alice@example.test", "x@remote.test"}) {
			t.Errorf("alias %+v", al)
		}
	}},
	{name: "alias.add adds targets", setup: func(e *env) { e.st.AddAlias("info@example.test", []string{"a@remote.test"}) }, method: "alias.add", params: AliasParams{Address: "info@example.test", Targets: []string{"A@remote.test", "b@remote.test"}}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if al := unmarshal[store.Alias](t, res); !slices.Equal(al.Targets, []string{"a@remote.test", "b@remote.test"}) {
			t.Errorf("alias %+v", al)
		}
	}},
	{name: "alias.add catch-all", method: "alias.add", params: AliasParams{Address: "@example.test", Targets: []string{"x@remote.test"}}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if al := unmarshal[store.Alias](t, res); al.Address != "@example.test" {
			t.Errorf("alias %+v", al)
		}
	}},
	{name: "alias.add without targets", method: "alias.add", params: AliasParams{Address: "info@example.test"}, code: CodeInvalid, msg: "at least one target"},
	{name: "alias.add bad target", method: "alias.add", params: AliasParams{Address: "info@example.test", Targets: []string{"not an address"}}, code: CodeInvalid, msg: "not an address"},
	{name: "alias.add over a user", setup: func(e *env) { e.user("alice@example.test") }, method: "alias.add", params: AliasParams{Address: "alice@example.test", Targets: []string{"x@remote.test"}}, code: CodeExists, msg: "is a user"},
	{name: "alias.add domain not local", method: "alias.add", params: AliasParams{Address: "info@elsewhere.test", Targets: []string{"x@remote.test"}}, code: CodeNotLocal, msg: "elsewhere.test"},
	{name: "alias.add targets not a list", method: "alias.add", params: raw(`{"address":"info@example.test","targets":"x@remote.test"}`), code: CodeInvalid, msg: "admin: bad parameters"},

	// alias.ls
	{name: "alias.ls none", method: "alias.ls", check: func(t *testing.T, e *env, res json.RawMessage) { wantRaw(t, res, "[]") }},
	{name: "alias.ls", setup: func(e *env) {
		e.st.AddAlias("info@example.test", []string{"x@remote.test"})
		e.st.AddAlias("abuse@example.test", []string{"y@remote.test"})
	}, method: "alias.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		as := unmarshal[[]store.Alias](t, res)
		if len(as) != 2 || as[0].Address != "abuse@example.test" || as[1].Address != "info@example.test" || !slices.Equal(as[1].Targets, []string{"x@remote.test"}) {
			t.Errorf("aliases %+v", as)
		}
	}},

	// alias.rm
	{name: "alias.rm", setup: func(e *env) { e.st.AddAlias("info@example.test", []string{"x@remote.test", "y@remote.test"}) }, method: "alias.rm", params: AliasParams{Address: "info@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if as, _ := e.st.Aliases(); len(as) != 0 {
			t.Errorf("aliases after rm %+v", as)
		}
	}},
	{name: "alias.rm one target", setup: func(e *env) { e.st.AddAlias("info@example.test", []string{"x@remote.test", "y@remote.test"}) }, method: "alias.rm", params: AliasParams{Address: "info@example.test", Targets: []string{"x@remote.test"}}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if as, _ := e.st.Aliases(); len(as) != 1 || !slices.Equal(as[0].Targets, []string{"y@remote.test"}) {
			t.Errorf("aliases after rm %+v", as)
		}
	}},
	{name: "alias.rm unknown", method: "alias.rm", params: AliasParams{Address: "info@example.test"}, code: CodeNotFound, msg: "info@example.test"},

	// mailbox.ls
	{name: "mailbox.ls", setup: func(e *env) { deliver(e, e.user("alice@example.test"), "hi") }, method: "mailbox.ls", params: MailboxParams{User: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		mbs := unmarshal[[]MailboxView](t, res)
		i := slices.IndexFunc(mbs, func(m MailboxView) bool { return m.Name == "INBOX" })
		if i < 0 || mbs[i].Messages != 1 || mbs[i].Unseen != 1 || mbs[i].Size == 0 || mbs[i].UIDValidity == 0 || mbs[i].UIDNext != 2 {
			t.Errorf("mailboxes %+v", mbs)
		}
		if !slices.ContainsFunc(mbs, func(m MailboxView) bool { return m.SpecialUse != "" }) {
			t.Errorf("no special-use mailbox in %+v", mbs)
		}
	}},
	{name: "mailbox.ls unknown user", method: "mailbox.ls", params: MailboxParams{User: "nobody@example.test"}, code: CodeNotFound, msg: "nobody@example.test"},
	{name: "mailbox.ls no user", method: "mailbox.ls", code: CodeInvalid},

	// mailbox.msgs
	{name: "mailbox.msgs", setup: func(e *env) { deliver(e, e.user("alice@example.test"), "hi") }, method: "mailbox.msgs", params: MailboxParams{User: "alice@example.test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if !strings.Contains(string(res), `"flags":[]`) {
			t.Errorf("flags are not an empty list: %s", res)
		}
		ms := unmarshal[[]MessageView](t, res)
		if len(ms) != 1 || ms[0].UID != 1 || ms[0].Subject != "hi" || ms[0].From != "x@remote.test" || ms[0].MessageID != "<1@remote.test>" || ms[0].Size == 0 {
			t.Fatalf("messages %+v", ms)
		}
		if ms[0].Date.IsZero() || !ms[0].Date.Equal(ms[0].InternalDate) {
			t.Errorf("a message without a Date has date %v, want its arrival %v", ms[0].Date, ms[0].InternalDate)
		}
	}},
	{name: "mailbox.msgs empty folder", setup: func(e *env) { deliver(e, e.user("alice@example.test"), "hi") }, method: "mailbox.msgs", params: MailboxParams{User: "alice@example.test", Folder: "Sent"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, "[]")
	}},
	{name: "mailbox.msgs unknown folder", setup: func(e *env) { e.user("alice@example.test") }, method: "mailbox.msgs", params: MailboxParams{User: "alice@example.test", Folder: "Nope"}, code: CodeNotFound},
	{name: "mailbox.msgs bad folder name", setup: func(e *env) { e.user("alice@example.test") }, method: "mailbox.msgs", params: MailboxParams{User: "alice@example.test", Folder: "a\x00b"}, code: CodeInvalid, msg: "mailbox name"},
	{name: "mailbox.msgs unknown user", method: "mailbox.msgs", params: MailboxParams{User: "nobody@example.test"}, code: CodeNotFound, msg: "nobody@example.test"},

	// queue.ls
	{name: "queue.ls none", method: "queue.ls", check: func(t *testing.T, e *env, res json.RawMessage) { wantRaw(t, res, "[]") }},
	{name: "queue.ls", setup: func(e *env) {
		e.enqueue("a@remote.test", queue.StatusActive, "b@one.test")
		e.id = e.enqueue("a@remote.test", queue.StatusHold, "b@two.test")
	}, method: "queue.ls", check: func(t *testing.T, e *env, res json.RawMessage) {
		if ms := unmarshal[[]queue.Message](t, res); len(ms) != 2 {
			t.Errorf("messages %+v", ms)
		}
	}},
	{name: "queue.ls status", setup: func(e *env) {
		e.enqueue("a@remote.test", queue.StatusActive, "b@one.test")
		e.id = e.enqueue("a@remote.test", queue.StatusHold, "b@two.test")
	}, method: "queue.ls", params: QueueListParams{Status: "hold"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if ms := unmarshal[[]queue.Message](t, res); len(ms) != 1 || ms[0].ID != e.id {
			t.Errorf("messages %+v", ms)
		}
	}},
	{name: "queue.ls domain", setup: func(e *env) {
		e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test")
		e.enqueue("a@remote.test", queue.StatusActive, "b@two.test")
	}, method: "queue.ls", params: QueueListParams{Domain: "ONE.test", Route: "remote"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if ms := unmarshal[[]queue.Message](t, res); len(ms) != 1 || ms[0].ID != e.id {
			t.Errorf("messages %+v", ms)
		}
	}},
	{name: "queue.ls min age", setup: func(e *env) { e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.ls", params: QueueListParams{MinAge: "2h"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, "[]")
	}},
	{name: "queue.ls route local", setup: func(e *env) { e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.ls", params: QueueListParams{Route: "local"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, "[]")
	}},
	{name: "queue.ls bad status", method: "queue.ls", params: QueueListParams{Status: "deferred"}, code: CodeInvalid, msg: `admin: unknown status "deferred"`},
	{name: "queue.ls bad route", method: "queue.ls", params: QueueListParams{Route: "sideways"}, code: CodeInvalid, msg: `admin: unknown route "sideways"`},
	{name: "queue.ls bad age", method: "queue.ls", params: QueueListParams{MinAge: "3 days"}, code: CodeInvalid, msg: "admin: bad age"},

	// queue.show
	{name: "queue.show", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.show", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		m := unmarshal[QueueMessageView](t, res)
		if m.Message == nil || m.ID != e.id || m.From != "a@remote.test" || len(m.Rcpts) != 1 {
			t.Errorf("message %+v", m)
		}
		if want := "From: <a@remote.test>\r\nSubject: queued\r\n"; m.Header != want {
			t.Errorf("header %q, want %q", m.Header, want)
		}
	}},
	// The header as every reader of Sluice reads it (package header): to
	// the first line that is not a field, cut after a whole line.
	{name: "queue.show header without an empty line", setup: func(e *env) {
		e.id = e.enqueueMessage("a@remote.test", "From: <a@remote.test>\nSubject: queued\nthe body, without an empty line before it\n", queue.StatusActive, "b@one.test")
	}, method: "queue.show", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if m := unmarshal[QueueMessageView](t, res); m.Header != "From: <a@remote.test>\nSubject: queued\n" {
			t.Errorf("header %q", m.Header)
		}
	}},
	{name: "queue.show huge header", setup: func(e *env) {
		e.id = e.enqueueMessage("a@remote.test", "Subject: queued\r\nX-Long: "+strings.Repeat("x", 70<<10)+"\r\n\r\nbody\r\n", queue.StatusActive, "b@one.test")
	}, method: "queue.show", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if m := unmarshal[QueueMessageView](t, res); m.Header != "Subject: queued\r\n" {
			t.Errorf("header %.40q... (%d bytes)", m.Header, len(m.Header))
		}
	}},
	{name: "queue.show unknown ID", method: "queue.show", params: QueueParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},
	{name: "queue.show no ID", method: "queue.show", code: CodeNotFound},

	// queue.rm
	{name: "queue.rm", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.rm", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if _, err := e.q.Get(e.id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("message after rm: %v", err)
		}
		if _, err := os.Stat(e.q.SpoolPath(e.id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("spool file after rm: %v", err)
		}
	}},
	{name: "queue.rm unknown ID", method: "queue.rm", params: QueueParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},

	// queue.hold
	{name: "queue.hold", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.hold", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if m := wantMessage(t, e, e.id); m.Status != queue.StatusHold || m.HoldReason != "held by an administrator" {
			t.Errorf("status %s (%s)", m.Status, m.HoldReason)
		}
	}},
	{name: "queue.hold with a reason", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.hold", paramsFn: func(e *env) any { return QueueParams{ID: e.id, Reason: "looks odd"} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if m := wantMessage(t, e, e.id); m.Status != queue.StatusHold || m.HoldReason != "looks odd" {
			t.Errorf("status %s (%s)", m.Status, m.HoldReason)
		}
	}},
	{name: "queue.hold unknown ID", method: "queue.hold", params: QueueParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},

	// queue.release
	{name: "queue.release from hold", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusHold, "b@one.test") }, method: "queue.release", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		m := wantMessage(t, e, e.id)
		if m.Status != queue.StatusActive || m.HoldReason != "" || !m.Rcpts[0].NextAttempt.IsZero() {
			t.Errorf("message %+v", m)
		}
	}},
	{name: "queue.release from quarantine", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusQuarantine, "b@one.test") }, method: "queue.release", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		if m := wantMessage(t, e, e.id); m.Status != queue.StatusActive {
			t.Errorf("status %s", m.Status)
		}
	}},
	{name: "queue.release active", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.release", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, code: CodeBadState, msg: "not on hold"},
	{name: "queue.release unknown ID", method: "queue.release", params: QueueParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},

	// queue.flush
	{name: "queue.flush ID", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test") }, method: "queue.flush", paramsFn: func(e *env) any { return QueueFlushParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, `{"count":1}`)
		if m := wantMessage(t, e, e.id); !m.Rcpts[0].NextAttempt.IsZero() {
			t.Errorf("next attempt %v", m.Rcpts[0].NextAttempt)
		}
	}},
	{name: "queue.flush domain", setup: func(e *env) {
		e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test")
		e.enqueue("a@remote.test", queue.StatusActive, "b@two.test")
		e.enqueue("a@remote.test", queue.StatusHold, "c@one.test")
	}, method: "queue.flush", params: QueueFlushParams{Domain: "One.Test"}, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, `{"count":1}`)
		if m := wantMessage(t, e, e.id); !m.Rcpts[0].NextAttempt.IsZero() {
			t.Errorf("next attempt %v", m.Rcpts[0].NextAttempt)
		}
	}},
	{name: "queue.flush all", setup: func(e *env) {
		e.enqueue("a@remote.test", queue.StatusActive, "b@one.test")
		e.enqueue("a@remote.test", queue.StatusActive, "b@two.test")
		e.enqueue("a@remote.test", queue.StatusHold, "c@one.test")
	}, method: "queue.flush", check: func(t *testing.T, e *env, res json.RawMessage) { wantRaw(t, res, `{"count":2}`) }},
	{name: "queue.flush ID and domain", method: "queue.flush", params: QueueFlushParams{ID: "0123456789abcdef", Domain: "one.test"}, code: CodeInvalid, msg: "admin: flush an ID or a domain, not both"},
	{name: "queue.flush unknown ID", method: "queue.flush", params: QueueFlushParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},

	// queue.bounce
	{name: "queue.bounce", setup: func(e *env) { e.id = e.enqueue("a@remote.test", queue.StatusActive, "b@one.test", "c@one.test") }, method: "queue.bounce", paramsFn: func(e *env) any { return QueueParams{ID: e.id, Reason: "no such host"} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, `{"count":2}`)
		// Every recipient failed: the message is gone, and a DSN that
		// names both recipients and the reason goes to the sender.
		if _, err := e.q.Get(e.id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("bounced message: %v", err)
		}
		all, _ := e.q.List(queue.Filter{})
		if len(all) != 1 || all[0].From != "" || len(all[0].Rcpts) != 1 || all[0].Rcpts[0].Addr != "a@remote.test" {
			t.Fatalf("queue after bounce: %+v", all)
		}
		f, err := e.q.OpenBody(all[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		body, _ := io.ReadAll(f)
		for _, want := range []string{"b@one.test", "c@one.test", "no such host"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("the DSN does not mention %q:\n%s", want, body)
			}
		}
	}},
	{name: "queue.bounce a DSN", setup: func(e *env) { e.id = e.enqueue("", queue.StatusActive, "b@one.test") }, method: "queue.bounce", paramsFn: func(e *env) any { return QueueParams{ID: e.id} }, check: func(t *testing.T, e *env, res json.RawMessage) {
		wantRaw(t, res, `{"count":1}`)
		if all, _ := e.q.List(queue.Filter{}); len(all) != 0 {
			t.Errorf("bouncing a DSN left %d messages in the queue: %+v", len(all), all)
		}
	}},
	{name: "queue.bounce unknown ID", method: "queue.bounce", params: QueueParams{ID: "0123456789abcdef"}, code: CodeNotFound, msg: "0123456789abcdef"},
	{name: "queue.bounce without a bouncer", setup: func(e *env) { e.svc.Bouncer = nil }, method: "queue.bounce", params: QueueParams{ID: "0123456789abcdef"}, code: CodeInvalid, msg: "admin: bouncing is not available here"},

	// verify
	{name: "verify", setup: func(e *env) { deliver(e, e.user("alice@example.test"), "hi") }, method: "verify", check: func(t *testing.T, e *env, res json.RawMessage) {
		if v := unmarshal[VerifyResult](t, res); v.Store.Messages != 1 || v.Store.Files != 1 || v.Store.OrphanFiles != nil || v.Store.MissingFiles != nil {
			t.Errorf("verify %+v", v)
		}
	}},

	{name: "verify removes an orphan file", setup: func(e *env) { orphan(e) }, method: "verify", check: func(t *testing.T, e *env, res json.RawMessage) {
		if v := unmarshal[VerifyResult](t, res); len(v.Store.OrphanFiles) != 1 {
			t.Errorf("verify %+v", v)
		}
		if _, err := os.Stat(filepath.Join(e.dir, orphan(nil))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("orphan file after verify: %v", err)
		}
	}},
	{name: "verify beside a running server keeps a young file", setup: func(e *env) {
		e.svc.Started = time.Now()
		orphan(e)
	}, method: "verify", check: func(t *testing.T, e *env, res json.RawMessage) {
		if v := unmarshal[VerifyResult](t, res); len(v.Store.OrphanFiles) != 0 || v.Store.Files != 1 {
			t.Errorf("verify %+v", v)
		}
		if _, err := os.Stat(filepath.Join(e.dir, orphan(nil))); err != nil {
			t.Errorf("young file after verify: %v", err)
		}
	}},

	// spam.learn
	{name: "spam.learn without pipelines", method: "spam.learn", params: LearnParams{Paths: []string{"/nonexistent"}}, code: CodeInvalid, msg: "admin: no filter pipelines are running"},
	{name: "spam.learn", setup: func(e *env) { withPipelines(e) }, method: "spam.learn", paramsFn: func(e *env) any {
		return LearnParams{Paths: []string{e.file("a.eml", testMessage), e.dir, e.dir + "/missing.eml", e.file("b.eml", testMessage)}, Spam: true}
	}, check: func(t *testing.T, e *env, res json.RawMessage) {
		r := unmarshal[LearnResult](t, res)
		if r.Learned != 2 || len(r.Failed) != 2 || !strings.Contains(r.Failed[0], "not a regular file") || !strings.Contains(r.Failed[1], "missing.eml") {
			t.Errorf("result %+v", r)
		}
	}},
	{name: "spam.learn no learning stage", setup: func(e *env) { withPipelines(e) }, method: "spam.learn", paramsFn: func(e *env) any {
		return LearnParams{Paths: []string{e.file("a.eml", testMessage)}, Pipeline: "outbound"}
	}, code: CodeInvalid},
	{name: "spam.learn unknown stage", setup: func(e *env) { withPipelines(e) }, method: "spam.learn", paramsFn: func(e *env) any {
		return LearnParams{Paths: []string{e.file("a.eml", testMessage)}, Stage: "nope"}
	}, code: CodeInvalid},

	// pipeline.test
	{name: "pipeline.test without pipelines", method: "pipeline.test", params: PipelineTestParams{Path: "/nonexistent"}, code: CodeInvalid, msg: "admin: no filter pipelines are running"},
	{name: "pipeline.test", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), From: "x@remote.test", To: []string{"alice@example.test"}}
	}, check: func(t *testing.T, e *env, res json.RawMessage) {
		r := unmarshal[PipelineTestResult](t, res)
		if r.Outcome.Action != verdict.Continue || r.Outcome.Code != 0 || !strings.Contains(r.Outcome.Header, "X-Test: checked") || len(r.Stages) == 0 {
			t.Errorf("result %+v", r)
		}
	}},
	{name: "pipeline.test reject at DATA", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", "Subject: reject\r\n\r\nbody\r\n"), From: "x@remote.test", To: []string{"alice@example.test"}}
	}, check: func(t *testing.T, e *env, res json.RawMessage) {
		r := unmarshal[PipelineTestResult](t, res)
		if r.Outcome.Action != verdict.Reject || r.Outcome.Code != 554 || r.Outcome.Text != "5.7.1 Bad content" || r.Outcome.Stage != "test" {
			t.Errorf("result %+v", r)
		}
	}},
	{name: "pipeline.test reject at MAIL", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), From: "spammer@remote.test", To: []string{"alice@example.test"}}
	}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if r := unmarshal[PipelineTestResult](t, res); r.Outcome.Action != verdict.Reject || r.Outcome.Code != 550 {
			t.Errorf("result %+v", r)
		}
	}},
	{name: "pipeline.test outbound with a user", setup: func(e *env) { withPipelines(e); e.user("alice@example.test") }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), Pipeline: "outbound", User: "alice@example.test", From: "alice@example.test", To: []string{"x@remote.test"}}
	}, check: func(t *testing.T, e *env, res json.RawMessage) {
		if r := unmarshal[PipelineTestResult](t, res); r.Outcome.Action != verdict.Continue {
			t.Errorf("result %+v", r)
		}
	}},
	{name: "pipeline.test unknown user", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), Pipeline: "outbound", User: "nobody@example.test"}
	}, code: CodeNotFound, msg: "admin: user nobody@example.test: "},
	{name: "pipeline.test directory", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.dir}
	}, code: CodeInvalid, msg: "is not a regular file"},
	{name: "pipeline.test device", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", params: PipelineTestParams{Path: os.DevNull}, code: CodeInvalid, msg: "is not a regular file"},
	{name: "pipeline.test missing file", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.dir + "/missing.eml"}
	}, code: CodeInvalid, msg: "missing.eml"},
	{name: "pipeline.test bad IP", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), IP: "300.1.1.1"}
	}, code: CodeInvalid, msg: `admin: bad IP address "300.1.1.1"`},
	{name: "pipeline.test unknown pipeline", setup: func(e *env) { withPipelines(e) }, method: "pipeline.test", paramsFn: func(e *env) any {
		return PipelineTestParams{Path: e.file("a.eml", testMessage), Pipeline: "sideways"}
	}, code: CodeInvalid, msg: `admin: unknown pipeline "sideways"`},
}

// TestMethods runs every case directly on the Service and through the
// socket: both must give the same results and error codes.
func TestMethods(t *testing.T) {
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			for _, tc := range adminCases {
				t.Run(tc.name, func(t *testing.T) {
					e := newEnv(t)
					if tc.setup != nil {
						tc.setup(e)
					}
					params := tc.params
					if tc.paramsFn != nil {
						params = tc.paramsFn(e)
					}
					var res json.RawMessage
					err := c.get(e).Call(context.Background(), tc.method, params, &res)
					if tc.code != "" {
						wantError(t, err, tc.code, tc.msg)
						if tc.check != nil {
							tc.check(t, e, nil)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if tc.check != nil {
						tc.check(t, e, res)
					}
				})
			}
		})
	}
}

// TestMethodsCovered checks that the cases call every method, so that a
// new method comes with tests.
func TestMethodsCovered(t *testing.T) {
	called := map[string]bool{}
	for _, tc := range adminCases {
		called[tc.method] = true
	}
	for _, m := range slices.Sorted(maps.Keys(methods)) {
		if !called[m] {
			t.Errorf("no case calls %s", m)
		}
	}
}

// TestAuditLog checks that each call of a method that changes state is
// logged once, with who called it, the method, its target and the
// result, and that lookups and passwords are not.
func TestAuditLog(t *testing.T) {
	e := newEnv(t)
	var buf syncBuffer
	e.svc.Log = slog.New(slog.NewTextHandler(&buf, nil))
	ctx := WithCaller(context.Background(), "web:root@example.test")
	calls := []struct {
		method string
		params any
	}{
		{"user.add", UserAddParams{Address: "alice@example.test", Password: "s3cret-pw-long"}},
		{"user.ls", nil},
		{"user.passwd", UserParams{Address: "alice@example.test", Password: "other-pw-long"}},
		{"user.set-admin", UserParams{Address: "alice@example.test", Admin: ptr(true)}},
		{"user.disable", UserParams{Address: "alice@example.test"}},
		{"user.rm", UserParams{Address: "nobody@example.test"}},
		{"alias.add", AliasParams{Address: "info@example.test", Targets: []string{"alice@example.test"}}},
		{"domain.add", DomainParams{Name: "other.test"}},
		{"queue.hold", QueueParams{ID: "no-such-id"}},
	}
	for _, c := range calls {
		e.svc.Call(ctx, c.method, c.params, nil)
	}
	e.svc.Call(context.Background(), "domain.rm", DomainParams{Name: "other.test"}, nil)
	log := buf.String()
	want := []string{
		`level=INFO msg="admin action" caller=web:root@example.test method=user.add target=alice@example.test result=ok`,
		`level=INFO msg="admin action" caller=web:root@example.test method=user.passwd target=alice@example.test result=ok`,
		`level=INFO msg="admin action" caller=web:root@example.test method=user.set-admin target=alice@example.test result=ok`,
		`level=INFO msg="admin action" caller=web:root@example.test method=user.disable target=alice@example.test result=ok`,
		`level=WARN msg="admin action" caller=web:root@example.test method=user.rm target=nobody@example.test result=error code=not_found err=`,
		`level=INFO msg="admin action" caller=web:root@example.test method=alias.add target=info@example.test result=ok`,
		`level=INFO msg="admin action" caller=web:root@example.test method=domain.add target=other.test result=ok`,
		`level=WARN msg="admin action" caller=web:root@example.test method=queue.hold target=no-such-id result=error code=not_found err=`,
		`level=INFO msg="admin action" caller=local method=domain.rm target=other.test result=ok`,
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines logged, want %d:\n%s", len(lines), len(want), log)
	}
	for i, w := range want {
		if _, rest, ok := strings.Cut(lines[i], " "); !ok || !strings.HasPrefix(rest, w) {
			t.Errorf("line %d = %s\nwant %s...", i, lines[i], w)
		}
	}
	if strings.Contains(log, "pw") || strings.Contains(log, "user.ls") {
		t.Errorf("a password or a lookup logged:\n%s", log)
	}
}

func ptr[T any](v T) *T { return &v }
