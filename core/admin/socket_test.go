package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketMode checks that the socket is created mode 0600, so that only
// the server's user (and root) can connect to it.
func TestSocketMode(t *testing.T) {
	e := newEnv(t)
	_, path := e.serve()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

// TestSocketModeUnderUmask checks the mode does not depend on the
// process's umask.
func TestSocketModeUnderUmask(t *testing.T) {
	old := setUmask(0)
	defer setUmask(old)
	e := newEnv(t)
	_, path := e.serve()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode under umask 0: %v (%v)", fi.Mode(), err)
	}
}

// TestSocketInUse checks that a second server on the same socket is
// refused and leaves the first one working.
func TestSocketInUse(t *testing.T) {
	e := newEnv(t)
	c, path := e.serve()
	_, err := Listen(path, e.svc, discardLog())
	if err == nil || !strings.Contains(err.Error(), "admin: ") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen: %v, want in use", err)
	}
	if err := c.Call(context.Background(), "status", nil, nil); err != nil {
		t.Errorf("the first server after a second Listen: %v", err)
	}
}

// TestSocketStale checks that a socket file left by a server that is gone
// is replaced.
func TestSocketStale(t *testing.T) {
	e := newEnv(t)
	dir, err := os.MkdirTemp("", "admin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, SocketName)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	srv, err := Listen(path, e.svc, discardLog())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Error(err)
	} else {
		c.http.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Error(err)
	}
	<-done
	// Close removes the socket, and Dial then fails.
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v", err)
	}
	if _, err := Dial(context.Background(), path); err == nil {
		t.Error("Dial after Close succeeded")
	}
}

// post sends body to the socket's endpoint and returns the status and the
// answer.
func post(t *testing.T, path, method, url, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSocketRequests checks the answers to requests the Client does not
// send: not JSON, too large, another path or HTTP method.
func TestSocketRequests(t *testing.T) {
	e := newEnv(t)
	_, path := e.serve()
	const url = "http://sluice/v1/call"
	for _, tc := range []struct {
		name, method, url, body string
		status                  int
		code, msg               string
	}{
		{"not JSON", "POST", url, "status", 200, CodeInvalid, "admin: bad request"},
		{"params not JSON", "POST", url, `{"method":"status","params":}`, 200, CodeInvalid, "admin: bad request"},
		{"too large", "POST", url, `{"method":"domain.add","params":{"name":"` + strings.Repeat("a", maxRequest) + `"}}`, 200, CodeInvalid, "admin: bad request"},
		{"unknown method", "POST", url, `{"method":"nope"}`, 200, CodeNoMethod, `admin: unknown method "nope"`},
		{"bad params", "POST", url, `{"method":"domain.add","params":{"nom":"x.test"}}`, 200, CodeInvalid, "admin: bad parameters"},
		{"GET", "GET", url, "", http.StatusMethodNotAllowed, "", ""},
		{"other path", "POST", "http://sluice/v2/call", `{"method":"status"}`, http.StatusNotFound, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, path, tc.method, tc.url, tc.body)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, body, tc.status)
			}
			if tc.code == "" {
				return
			}
			var r response
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			if r.Error == nil || r.Error.Code != tc.code || !strings.Contains(r.Error.Message, tc.msg) || r.Result != nil {
				t.Errorf("answer %s, want error %s %q", body, tc.code, tc.msg)
			}
		})
	}
	// The server still answers after all that.
	if status, body := post(t, path, "POST", url, `{"method":"status"}`); status != 200 || !strings.Contains(body, `"result":{"running":false`) {
		t.Errorf("status: %d %s", status, body)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestSocketLog checks that changes are logged with their method and
// the socket's peer as the caller, and lookups are not.
func TestSocketLog(t *testing.T) {
	e := newEnv(t)
	var buf syncBuffer
	dir, err := os.MkdirTemp("", "admin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, SocketName)
	log := slog.New(slog.NewTextHandler(&buf, nil))
	e.svc.Log = log
	srv, err := Listen(path, e.svc, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
		<-done
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.http.CloseIdleConnections()
	ctx := context.Background()
	c.Call(ctx, "domain.ls", nil, nil)
	c.Call(ctx, "domain.add", DomainParams{Name: "other.test"}, nil)
	c.Call(ctx, "domain.add", DomainParams{Name: "other.test"}, nil) // exists
	out := buf.String()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	who := "caller=unix:" + me.Username + "(" + me.Uid + ") method=domain.add target=other.test"
	if n := strings.Count(out, who+" result=ok"); n != 1 {
		t.Errorf("domain.add logged %d times as ok by %s, want once:\n%s", n, who, out)
	}
	if n := strings.Count(out, who+" result=error code=exists"); n != 1 {
		t.Errorf("the second domain.add logged %d times as an error, want once:\n%s", n, out)
	}
	if strings.Contains(out, "domain.ls") || strings.Contains(out, "method=status") {
		t.Errorf("lookups logged:\n%s", out)
	}
}

func setUmask(m int) int { return unix.Umask(m) }

// nobody is the user the other-user tests connect as.
const nobody = 65534

// dialAs connects to the socket at path as user uid (with python3, which
// any user can run) and sends a status call; it returns what the process
// printed: the answer's first bytes or the error's name.
func dialAs(t *testing.T, uid int, path string) string {
	t.Helper()
	// The Debian python3 (.ci/deps.sh), not one under root's home that
	// another user cannot run.
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("python3, installed by .ci/deps.sh: %v", err)
	}
	const script = `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
    s.sendall(b'POST /v1/call HTTP/1.1\r\nHost: sluice\r\nContent-Length: 19\r\n\r\n{"method":"status"}')
    print("answer:" + s.recv(100).decode(errors="replace"))
except OSError as e:
    print("error:" + type(e).__name__)
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", script, path)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 as uid %d: %v\n%s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSocketOtherUser checks that another user can neither connect to the
// socket (its mode) nor, when the mode is opened up, get an answer (the
// peer check).
func TestSocketOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("running a process as another user needs root")
	}
	e := newEnv(t)
	var buf syncBuffer
	dir, err := os.MkdirTemp("", "admin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, SocketName)
	srv, err := Listen(path, e.svc, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
		<-done
	}()
	// The directory is open to others here, as a data directory's parent
	// is: only the socket's own mode keeps them out.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The server's own user gets an answer (the python script works).
	if out := dialAs(t, os.Getuid(), path); !strings.HasPrefix(out, "answer:HTTP/1.1 200") {
		t.Fatalf("as root: %q", out)
	}
	if out := dialAs(t, nobody, path); out != "error:PermissionError" {
		t.Errorf("another user connecting to the 0600 socket: %q, want PermissionError", out)
	}
	// With the mode opened up, the peer check still refuses the user.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if out := dialAs(t, nobody, path); strings.HasPrefix(out, "answer:HTTP") {
		t.Errorf("another user got an answer through a 0666 socket: %q", out)
	}
	if !strings.Contains(buf.String(), "refusing connection from another user") {
		t.Errorf("the refusal was not logged:\n%s", buf.String())
	}
}
