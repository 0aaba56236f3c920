//go:build linux

package pluginhost

// The plugin launcher: how plugins run as a user of their own (the config's
// plugin_user), with no access to the store, also when they are started
// after the server has given up root (a crash restart, a reload).
//
// Started as root, the server starts the launcher before it drops root:
// the same program, re-executed (/proc/self/exe LauncherArg), holding one
// end of a unix socketpair (SOCK_SEQPACKET: one message per record) as
// file descriptor 3. The launcher stays root and does nothing but serve
// that socket. The first message the server sends, still as root, is the
// LauncherConfig: the plugin programs the configuration names (with their
// SHA-256, if set), the plugin user, the directory of the plugins' state
// directories and the server's group. After that it takes only:
//
//   - start: run one of those programs as the plugin user, with the
//     environment given and the stdin, stdout and stderr passed along with
//     the message (SCM_RIGHTS); it answers the process ID or an error;
//   - kill: send SIGKILL to one of its own children.
//
// and it reports each child's exit. A server that has been taken over can
// so make it run only the programs the configuration named at the start,
// only as the plugin user (never root: a config for uid 0 is refused), and
// signal only those. It gives the plugin's state directory (a directory
// right under the state directory base, never a link) to the plugin user
// before each start, since the unprivileged server cannot.
//
// go-plugin's unix socket: the plugin creates it in the directory
// PLUGIN_UNIX_SOCKET_DIR names, and the server must be able to connect to
// it. The launcher makes a directory for each plugin, owned by the plugin
// user with the server's group and the set-group-ID bit (mode 2710), and
// runs plugins with umask 007: the socket gets the server's group and
// mode 770, so the server may connect and other users may not. The
// launcher removes the directory when the plugin exits.
//
// Nothing outlives the server. When the server's end of the socket
// closes, which the kernel does when the server dies however it dies
// (kill -9 included; the end is close-on-exec, so no other process holds
// it), the launcher kills its plugins, waits for them and exits. The
// launcher also has a parent-death signal (SIGKILL, set from a thread that
// lives as long as it does, see startOnOwnThread), but that only works
// until the server switches to run_as: the kernel sends it only if the
// dying parent may signal the child, and an unprivileged server may not
// signal the root launcher. Each plugin has one too, from the launcher's
// main thread, which lives as long as the launcher; root may signal the
// plugin user. Plugins learn the server's process ID, their grandparent,
// as sdk.HostPIDEnv; the SDK accepts an ancestor, and its Serve exits when
// its parent, the launcher, goes.
//
// On the server side, a Launcher makes go-plugin runners
// (ClientConfig.RunnerFunc) that start processes through it: the liveness
// and the exit status come from the launcher's reports, since the server
// may not signal or wait for another user's process.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
)

// LauncherArg is the argument that makes the sluice program a plugin
// launcher (cmd/sluice calls RunLauncher for it).
const LauncherArg = "__sluice-plugin-launcher"

// maxLauncherMsg bounds one message on the launcher's socket.
const maxLauncherMsg = 1 << 20

// LauncherConfig is what a launcher may do; the server sends it first.
type LauncherConfig struct {
	// Plugins are the only programs the launcher runs.
	Plugins []AllowedPlugin
	// Credential is the plugin user, which every plugin runs as; never
	// uid 0.
	Credential syscall.Credential
	// StateDirs is the directory whose direct subdirectories are the
	// plugins' state directories; they are given to the plugin user.
	StateDirs string
	// SocketGID is the server's group, which may connect to the plugins'
	// sockets.
	SocketGID int
}

// AllowedPlugin is a program the launcher may run.
type AllowedPlugin struct {
	Path   string
	SHA256 string // hex; empty means no check
}

// launcherMsg is one message either way.
type launcherMsg struct {
	Op       string          `json:"op"` // config, start, kill; started, error, exit
	Config   *LauncherConfig `json:"config,omitempty"`
	Path     string          `json:"path,omitempty"`
	Env      []string        `json:"env,omitempty"`
	StateDir string          `json:"state_dir,omitempty"`
	PID      int             `json:"pid,omitempty"`
	Err      string          `json:"err,omitempty"`
}

// RunLauncher is the launcher process: it serves the socket on file
// descriptor 3 and returns the exit status when the server closes it.
func RunLauncher() int {
	// Plugins are forked from this thread, which ends only with the
	// process, so their parent-death signal comes when the launcher dies.
	runtime.LockOSThread()
	syscall.Umask(0o007)
	f := os.NewFile(3, "launcher socket")
	c, err := net.FileConn(f)
	f.Close()
	uc, ok := c.(*net.UnixConn)
	if err != nil || !ok {
		fmt.Fprintf(os.Stderr, "sluice plugin launcher: no socket on file descriptor 3 (%v); sluice serve starts it\n", err)
		return 2
	}
	if err := serveLauncher(uc); err != nil {
		fmt.Fprintf(os.Stderr, "sluice plugin launcher: %v\n", err)
		return 1
	}
	return 0
}

// launcherServer is the launcher's state.
type launcherServer struct {
	conn *net.UnixConn
	cfg  LauncherConfig
	wmu  sync.Mutex // one message at a time, in order
	mu   sync.Mutex
	kids map[int]*exec.Cmd
	wg   sync.WaitGroup
}

// serveLauncher reads the config, then requests, until conn is closed;
// then it kills its children and waits for them.
func serveLauncher(conn *net.UnixConn) error {
	defer conn.Close()
	s := &launcherServer{conn: conn, kids: map[int]*exec.Cmd{}}
	msg, fds, err := readLauncherMsg(conn)
	closeFDs(fds)
	if err != nil {
		return err
	}
	if msg.Op != "config" || msg.Config == nil {
		return fmt.Errorf("pluginhost: launcher: first message is %q, want the config", msg.Op)
	}
	if msg.Config.Credential.Uid == 0 || msg.Config.Credential.Gid == 0 {
		return errors.New("pluginhost: launcher: refusing to run plugins as root")
	}
	s.cfg = *msg.Config
	defer func() {
		s.mu.Lock()
		for _, cmd := range s.kids {
			cmd.Process.Kill()
		}
		s.mu.Unlock()
		s.wg.Wait()
	}()
	for {
		msg, fds, err := readLauncherMsg(conn)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			closeFDs(fds)
			return err
		}
		switch msg.Op {
		case "start":
			if err := s.start(msg, fds); err != nil {
				s.send(launcherMsg{Op: "error", Err: err.Error()})
			}
		case "kill":
			closeFDs(fds)
			s.mu.Lock()
			if cmd := s.kids[msg.PID]; cmd != nil {
				cmd.Process.Kill()
			}
			s.mu.Unlock()
		default:
			closeFDs(fds)
			return fmt.Errorf("pluginhost: launcher: unknown request %q", msg.Op)
		}
	}
}

// start runs one plugin, whose stdin, stdout and stderr are fds, and
// answers its process ID; it reports the exit when the process ends.
func (s *launcherServer) start(req launcherMsg, fds []int) error {
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "plugin stdio")
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) != 3 {
		return fmt.Errorf("pluginhost: launcher: %d file descriptors with the request, want 3", len(files))
	}
	if err := s.allowed(req.Path); err != nil {
		return err
	}
	if req.StateDir != "" {
		if err := s.giveStateDir(req.StateDir); err != nil {
			return err
		}
	}
	sockDir, err := os.MkdirTemp("", "sluice-plugin-")
	if err != nil {
		return fmt.Errorf("pluginhost: launcher: %w", err)
	}
	cred := s.cfg.Credential
	err = errors.Join(os.Chown(sockDir, int(cred.Uid), s.cfg.SocketGID), os.Chmod(sockDir, 0o710|os.ModeSetgid))
	if err != nil {
		os.RemoveAll(sockDir)
		return fmt.Errorf("pluginhost: launcher: %w", err)
	}
	cmd := &exec.Cmd{
		Path:   req.Path,
		Args:   []string{req.Path},
		Env:    launchedEnv(req.Env, sockDir),
		Stdin:  files[0],
		Stdout: files[1],
		Stderr: files[2],
		// The kernel clears the parent-death signal when the credentials
		// change; Go sets it in the child after switching user.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: &cred},
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(sockDir)
		return fmt.Errorf("pluginhost: launcher: %w", err)
	}
	pid := cmd.Process.Pid
	s.mu.Lock()
	s.kids[pid] = cmd
	s.mu.Unlock()
	// Reported before the exit can be.
	s.send(launcherMsg{Op: "started", PID: pid})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		os.RemoveAll(sockDir)
		s.mu.Lock()
		delete(s.kids, pid)
		s.mu.Unlock()
		msg := launcherMsg{Op: "exit", PID: pid}
		if err != nil {
			msg.Err = err.Error()
		}
		s.send(msg)
	}()
	return nil
}

// launchedEnv returns the environment of a plugin the launcher starts:
// the one the server asked for, with the launcher's own socket directory,
// and without the dynamic loader's variables (LD_PRELOAD and the like),
// by which an unprivileged server could otherwise run code of its choice
// as the plugin user.
func launchedEnv(env []string, sockDir string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "PLUGIN_UNIX_SOCKET_DIR=") || strings.HasPrefix(kv, "PLUGIN_UNIX_SOCKET_GROUP=") || strings.HasPrefix(kv, "LD_")
	})
	return append(env, "PLUGIN_UNIX_SOCKET_DIR="+sockDir)
}

// allowed checks that path is a program of the config, with its checksum.
func (s *launcherServer) allowed(path string) error {
	i := slices.IndexFunc(s.cfg.Plugins, func(a AllowedPlugin) bool { return a.Path == path })
	if i < 0 {
		return fmt.Errorf("pluginhost: launcher: %s is not a plugin the configuration named when sluice started (restart sluice to add a plugin)", path)
	}
	if want := s.cfg.Plugins[i].SHA256; want != "" {
		if err := checkSum(path, want); err != nil {
			return fmt.Errorf("pluginhost: launcher: %w", err)
		}
	}
	return nil
}

// giveStateDir makes the plugin user the owner of a state directory, which
// must be a directory (not a link) right under the config's StateDirs.
func (s *launcherServer) giveStateDir(dir string) error {
	dir = filepath.Clean(dir)
	if s.cfg.StateDirs == "" || filepath.Dir(dir) != filepath.Clean(s.cfg.StateDirs) {
		return fmt.Errorf("pluginhost: launcher: %s is not a state directory", dir)
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pluginhost: launcher: state directory %s: %w", dir, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Fchown(fd, int(s.cfg.Credential.Uid), int(s.cfg.Credential.Gid)); err != nil {
		return fmt.Errorf("pluginhost: launcher: state directory %s: %w", dir, err)
	}
	return nil
}

func (s *launcherServer) send(m launcherMsg) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	writeLauncherMsg(s.conn, m, nil)
}

func readLauncherMsg(conn *net.UnixConn) (launcherMsg, []int, error) {
	buf := make([]byte, maxLauncherMsg)
	oob := make([]byte, syscall.CmsgSpace(3*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	var fds []int
	if cmsgs, cerr := syscall.ParseSocketControlMessage(oob[:oobn]); cerr == nil {
		for _, c := range cmsgs {
			if r, err := syscall.ParseUnixRights(&c); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	if err != nil {
		return launcherMsg{}, fds, err
	}
	if n == 0 {
		return launcherMsg{}, fds, io.EOF
	}
	var m launcherMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return m, fds, fmt.Errorf("pluginhost: launcher: bad message: %w", err)
	}
	return m, fds, nil
}

func writeLauncherMsg(conn *net.UnixConn, m launcherMsg, files []*os.File) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	_, _, err = conn.WriteMsgUnix(data, oob, nil)
	return err
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// Launcher is the server's side of a launcher process: it starts plugins
// through it (Options.Launcher).
type Launcher struct {
	conn *net.UnixConn
	log  *slog.Logger
	proc *exec.Cmd     // nil for a launcher served in this process (tests)
	done chan struct{} // closed when the launcher process has exited

	startMu sync.Mutex            // one start at a time
	replies chan launcherMsg      // answers to start
	mu      sync.Mutex            // guards the fields below
	wmu     sync.Mutex            // one message at a time
	exits   map[int]chan struct{} // closed when the process exits
	status  map[int]string        // exit error, set before the close
	gone    bool                  // the launcher's socket is closed
}

// StartLauncher starts a launcher process with cfg. The caller must be
// root; the launcher stays root.
func StartLauncher(cfg LauncherConfig, log *slog.Logger) (*Launcher, error) {
	if cfg.Credential.Uid == 0 || cfg.Credential.Gid == 0 {
		return nil, errors.New("pluginhost: refusing to run plugins as root")
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pluginhost: launcher: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "launcher"), os.NewFile(uintptr(fds[1]), "launcher")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/exe", LauncherArg)
	cmd.Args[0] = os.Args[0] // ps shows sluice __sluice-plugin-launcher
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = sysProcAttr()
	// Forked from a thread that lives as long as the launcher, for its
	// parent-death signal (see startOnOwnThread).
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			runtime.UnlockOSThread()
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
		runtime.UnlockOSThread()
	}()
	if err := <-started; err != nil {
		ours.Close()
		return nil, fmt.Errorf("pluginhost: starting the plugin launcher: %w", err)
	}
	l, err := newLauncher(ours, cfg, log)
	if err != nil {
		cmd.Process.Kill()
		<-done
		return nil, err
	}
	l.proc, l.done = cmd, done
	log.Info("plugin launcher started", "pid", cmd.Process.Pid, "plugin_uid", cfg.Credential.Uid)
	return l, nil
}

// newLauncher talks to a launcher over f and sends it cfg.
func newLauncher(f *os.File, cfg LauncherConfig, log *slog.Logger) (*Launcher, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("pluginhost: launcher: %w", err)
	}
	l := &Launcher{conn: c.(*net.UnixConn), log: log, replies: make(chan launcherMsg, 1), exits: map[int]chan struct{}{}, status: map[int]string{}}
	if err := writeLauncherMsg(l.conn, launcherMsg{Op: "config", Config: &cfg}, nil); err != nil {
		l.conn.Close()
		return nil, fmt.Errorf("pluginhost: launcher: %w", err)
	}
	go l.read()
	return l, nil
}

// read dispatches the launcher's messages until its socket closes.
func (l *Launcher) read() {
	for {
		m, fds, err := readLauncherMsg(l.conn)
		closeFDs(fds)
		if err != nil {
			break
		}
		switch m.Op {
		case "started":
			l.mu.Lock()
			l.exits[m.PID] = make(chan struct{})
			l.mu.Unlock()
			l.replies <- m
		case "error":
			l.replies <- m
		case "exit":
			l.mu.Lock()
			if ch := l.exits[m.PID]; ch != nil {
				l.status[m.PID] = m.Err
				close(ch)
				delete(l.exits, m.PID)
			}
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	closing := l.gone
	l.gone = true
	for pid, ch := range l.exits {
		l.status[pid] = "the plugin launcher is gone"
		close(ch)
	}
	l.exits = map[int]chan struct{}{}
	l.mu.Unlock()
	if !closing {
		l.log.Error("the plugin launcher exited: plugins cannot be started until sluice is restarted")
	}
	close(l.replies)
}

// Close ends the launcher, which kills the plugins it still runs, and
// waits for it to exit.
func (l *Launcher) Close() {
	l.mu.Lock()
	l.gone = true
	l.mu.Unlock()
	l.conn.CloseWrite()
	if l.done != nil {
		<-l.done
	}
}

// start asks the launcher to run path; it returns the process ID and a
// channel closed when the process exits.
func (l *Launcher) start(ctx context.Context, path, stateDir string, env []string, stdio []*os.File) (int, <-chan struct{}, error) {
	l.startMu.Lock()
	l.wmu.Lock()
	err := writeLauncherMsg(l.conn, launcherMsg{Op: "start", Path: path, StateDir: stateDir, Env: env}, stdio)
	l.wmu.Unlock()
	if err != nil {
		l.startMu.Unlock()
		return 0, nil, fmt.Errorf("pluginhost: launcher: %w", err)
	}
	select {
	case m, ok := <-l.replies:
		l.startMu.Unlock()
		switch {
		case !ok:
			return 0, nil, errors.New("pluginhost: the plugin launcher is gone")
		case m.Op == "error":
			return 0, nil, errors.New(m.Err)
		}
		l.mu.Lock()
		ch := l.exits[m.PID]
		l.mu.Unlock()
		return m.PID, ch, nil
	case <-ctx.Done():
		// The answer still comes, and is this start's: the next start
		// waits for it.
		go func() {
			defer l.startMu.Unlock()
			if m, ok := <-l.replies; ok && m.Op == "started" {
				l.kill(m.PID)
			}
		}()
		return 0, nil, ctx.Err()
	}
}

// kill has the launcher send SIGKILL to pid.
func (l *Launcher) kill(pid int) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	writeLauncherMsg(l.conn, launcherMsg{Op: "kill", PID: pid}, nil)
}

// exitStatus is the error the launcher reported for pid, after it exited.
func (l *Launcher) exitStatus(pid int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.status[pid]; s != "" {
		delete(l.status, pid)
		return errors.New(s)
	}
	delete(l.status, pid)
	return nil
}

// launcherRunner is a go-plugin runner that starts the plugin through a
// Launcher.
type launcherRunner struct {
	l              *Launcher
	path, stateDir string
	env            []string
	stdout, stderr *os.File
	pid            int
	exited         <-chan struct{}
}

var _ runner.Runner = (*launcherRunner)(nil)

// runnerFunc returns the ClientConfig.RunnerFunc that starts spec through
// l with env (go-plugin's variables are added to it).
func (l *Launcher) runnerFunc(spec Spec, env []string) func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
	return func(_ hclog.Logger, cmd *exec.Cmd, hostDir string) (runner.Runner, error) {
		// The launcher makes the plugin's socket directory; the one
		// go-plugin made is not used, and would be left behind by a
		// start that fails.
		os.Remove(hostDir)
		return &launcherRunner{l: l, path: spec.Path, stateDir: spec.StateDir, env: append(env, cmd.Env...)}, nil
	}
}

func (r *launcherRunner) Start(ctx context.Context) error {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	pid, exited, err := r.l.start(ctx, r.path, r.stateDir, r.env, []*os.File{null, outW, errW})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return err
	}
	r.stdout, r.stderr, r.pid, r.exited = outR, errR, pid, exited
	return nil
}

func (r *launcherRunner) Wait(ctx context.Context) error {
	select {
	case <-r.exited:
		return r.l.exitStatus(r.pid)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *launcherRunner) Kill(context.Context) error {
	select {
	case <-r.exited:
	default:
		r.l.kill(r.pid)
	}
	return nil
}

func (r *launcherRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *launcherRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *launcherRunner) Name() string          { return r.path }
func (r *launcherRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}
func (r *launcherRunner) Diagnose(context.Context) string { return "" }

func (r *launcherRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *launcherRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
