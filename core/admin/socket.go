package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SocketName is the admin socket's file name in the data directory.
const SocketName = "admin.sock"

type request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

type response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// maxRequest bounds a request body.
const maxRequest = 1 << 20

// Server serves a Service on a unix socket.
type Server struct {
	svc  *Service
	log  *slog.Logger
	path string
	http *http.Server
	ln   net.Listener
}

// Listen creates the socket at path (replacing a stale one) and returns a
// Server; Serve runs it.
func Listen(path string, svc *Service, log *slog.Logger) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin: %s is in use: is another sluice running on this data directory?", path)
	}
	os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{svc: svc, log: log, path: path, ln: &peerCheck{Listener: ln, log: log}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/call", s.handle)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: 5 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return WithCaller(ctx, pc.who)
			}
			return ctx
		}}
	return s, nil
}

// Serve serves until Close.
func (s *Server) Serve() {
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin socket stopped", "err", err)
	}
}

// Close stops the server, waits up to ctx for calls in progress, and
// removes the socket.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	var req request
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest))
	var resp response
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		resp.Error = &Error{Code: CodeInvalid, Message: "admin: bad request: " + err.Error()}
	} else {
		out, aerr := s.svc.call(r.Context(), req.Method, req.Params)
		if aerr != nil {
			resp.Error = aerr
			if aerr.Code == CodeInternal {
				s.log.Error("admin call failed", "method", req.Method, "err", aerr.Message)
			}
		} else if resp.Result, err = json.Marshal(out); err != nil {
			resp.Error = toError(err)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// peerConn is a connection accepted by peerCheck, with who is at the
// other end, as the audit log names them.
type peerConn struct {
	net.Conn
	who string
}

// peerName names the user with the given uid: "unix:NAME(UID)", or
// "unix:UID" when the name cannot be looked up.
func peerName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return "unix:" + u.Username + "(" + id + ")"
	}
	return "unix:" + id
}

// peerCheck refuses connections from other users than the server's own
// (and root), as a second fence behind the socket's file mode.
type peerCheck struct {
	net.Listener
	log *slog.Logger
}

func (p *peerCheck) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil
		}
		raw, err := uc.SyscallConn()
		var cred *unix.Ucred
		if err == nil {
			raw.Control(func(fd uintptr) {
				cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			})
		}
		if err != nil || (cred.Uid != 0 && int(cred.Uid) != os.Getuid()) {
			p.log.Warn("admin socket: refusing connection from another user", "err", err)
			c.Close()
			continue
		}
		return &peerConn{Conn: c, who: peerName(cred.Uid)}, nil
	}
}

// Client calls a running server's admin socket.
type Client struct {
	http *http.Client
}

// Dial connects to the admin socket at path and checks that a server
// answers there.
func Dial(ctx context.Context, path string) (*Client, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	c := &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Call(ctx, "status", nil, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Call implements Caller over the socket.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	p, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	body, _ := json.Marshal(request{Method: method, Params: p})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sluice/v1/call", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	var r response
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&r); err != nil {
		return fmt.Errorf("admin: bad response: %w", err)
	}
	if r.Error != nil {
		return r.Error
	}
	if result != nil && len(r.Result) > 0 {
		return json.Unmarshal(r.Result, result)
	}
	return nil
}

var _ Caller = (*Client)(nil)
