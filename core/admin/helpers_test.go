package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
)

// testQuota is the store's default quota in the tests' environment.
const testQuota = 1 << 20

// testPassword is the password of the users setup functions create.
const testPassword = "correct horse"

var (
	hashOnce sync.Once
	hashed   string
)

// passwordHash returns a hash of testPassword, computed once (argon2 is
// slow on purpose).
func passwordHash(t *testing.T) string {
	t.Helper()
	hashOnce.Do(func() {
		h, err := auth.HashPassword(testPassword)
		if err != nil {
			panic(err)
		}
		hashed = h
	})
	return hashed
}

// env is a Service on a real store and queue in a temporary directory,
// with the domain example.test.
type env struct {
	t   *testing.T
	dir string
	st  *store.Store
	q   *queue.Queue
	svc *Service
	// id is a queue ID a case's setup leaves for its params and check.
	id string
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "store"), RecipientDelimiter: "+", DefaultQuota: testQuota, Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := queue.Open(queue.Options{Dir: filepath.Join(dir, "queue"), Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	if _, err := st.AddDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	svc := &Service{Store: st, Queue: q, Hostname: "mx.example.test",
		Bouncer: &dsn.Bouncer{Queue: q, Store: st, Hostname: "mx.example.test", MaxReturned: 1 << 20, Logger: discardLog()}}
	return &env{t: t, dir: dir, st: st, q: q, svc: svc}
}

// user creates a user with testPassword and returns it.
func (e *env) user(addr string) store.User {
	e.t.Helper()
	u, err := e.st.AddUser(store.NewUser{Address: addr, PasswordHash: passwordHash(e.t), Quota: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// enqueue commits a message from sender to rcpts (remote recipients) with
// the given status and returns its ID.
func (e *env) enqueue(from string, status queue.Status, rcpts ...string) string {
	e.t.Helper()
	return e.enqueueMessage(from, "From: <"+from+">\r\nSubject: queued\r\n\r\nbody\r\n", status, rcpts...)
}

// enqueueMessage is enqueue with the message given.
func (e *env) enqueueMessage(from, message string, status queue.Status, rcpts ...string) string {
	e.t.Helper()
	w, err := e.q.Create()
	if err != nil {
		e.t.Fatal(err)
	}
	rp := queue.ReturnPathField(from)
	io.WriteString(w, rp+message)
	m := &queue.Message{Received: time.Now().Add(-time.Hour), From: from, ReturnPath: int64(len(rp)), Status: status, Client: queue.Client{IP: "127.0.0.1", Listener: "mx"}}
	if status != queue.StatusActive {
		m.HoldReason = "test"
	}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, queue.Recipient{Orig: r, Addr: r, Route: queue.RouteRemote, State: queue.StatePending, NextAttempt: time.Now().Add(time.Hour)})
	}
	if err := w.Commit(m); err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

// file writes a message file in the environment's directory and returns
// its path.
func (e *env) file(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// serve runs the Service on a socket in a fresh short directory (a unix
// socket path is limited to about 100 bytes) and returns a Client of it
// and the socket's path.
func (e *env) serve() (*Client, string) {
	e.t.Helper()
	dir, err := os.MkdirTemp("", "admin")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, SocketName)
	srv, err := Listen(path, e.svc, discardLog())
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
		<-done
	})
	c, err := Dial(context.Background(), path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.http.CloseIdleConnections)
	return c, path
}

// callers are the two ways to reach a Service, which must behave alike.
var callers = []struct {
	name string
	get  func(e *env) Caller
}{
	{"direct", func(e *env) Caller { return e.svc }},
	{"socket", func(e *env) Caller { c, _ := e.serve(); return c }},
}

// wantError checks that err is an *Error with code whose message contains
// msg.
func wantError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %v (%T), want an *admin.Error with code %s", err, err, code)
	}
	if ae.Code != code {
		t.Errorf("code %q (%s), want %q", ae.Code, ae.Message, code)
	}
	if !strings.Contains(ae.Message, msg) {
		t.Errorf("message %q, want it to contain %q", ae.Message, msg)
	}
}

func unmarshal[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	return v
}
