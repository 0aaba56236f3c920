package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// sluiceServer is bin/sluice under test, with its own config and data
// directory.
type sluiceServer struct {
	label   string // the name in the output; "sluice" when empty
	bin     string
	dir     string
	config  string
	logFile string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	stopped bool
	rss     *rssSampler
	// For an instance with filter stages: the peak summed VmRSS of its
	// plugin processes (its descendants), and whether quarantined
	// messages count as delivered.
	pluginRSS  *rssSampler
	filtered   bool
	restartsAt map[string]int64 // plugin restarts by stage, at the last check
}

// sluiceOptions are what differs between the Sluice instances under test.
type sluiceOptions struct {
	label string
	// extraConfig is YAML appended to the config: plugins and pipelines.
	extraConfig string
	filtered    bool
	// smtpConfig is YAML added to the smtp section (indented two spaces).
	smtpConfig string
	// logLevel is log.level; empty means warn.
	logLevel string
	// env is added to Sluice's environment (SLUICE_PPROF, to profile it).
	env []string
	// fill, when set, prepares the data directory before Sluice starts,
	// instead of adding the bench user with the CLI.
	fill func(dataDir string) error
}

const sluiceConfig = `# Written by cmd/sluice-bench.
hostname: bench.local
data_dir: %s
domains: [bench.test]
smtp:
  mx:
    listen: [%q]
  max_connections_per_ip: 1000
  max_connections: 2000
%squeue: {min_free_disk: 0}
log: {level: %s}
`

// sluiceConfigYAML returns the config of an instance with its data in
// dataDir and its MX listener on addr.
func sluiceConfigYAML(dataDir, addr string, opts sluiceOptions) string {
	level := opts.logLevel
	if level == "" {
		level = "warn"
	}
	return fmt.Sprintf(sluiceConfig, dataDir, addr, opts.smtpConfig, level) + opts.extraConfig
}

func startSluice(ctx context.Context, bin, dir string, opts sluiceOptions) (*sluiceServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &sluiceServer{
		label:    opts.label,
		filtered: opts.filtered,
		bin:      bin,
		dir:      dir,
		config:   filepath.Join(dir, "sluice.yaml"),
		logFile:  filepath.Join(dir, "sluice.log"),
		addr:     addr,
	}
	cfg := sluiceConfigYAML(filepath.Join(dir, "data"), addr, opts)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	// The user is created before the server starts, by the CLI on the data
	// directory: hashing its password then costs the server nothing.
	if opts.fill != nil {
		if err := opts.fill(filepath.Join(dir, "data")); err != nil {
			return nil, err
		}
	} else if err := s.addUser(ctx); err != nil {
		return nil, err
	}
	logf, err := os.Create(s.logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd = exec.Command(bin, "serve", "-c", s.config)
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	if len(opts.env) > 0 {
		s.cmd.Env = append(os.Environ(), opts.env...)
	}
	// Its own process group: a Ctrl-C reaches the harness, which stops
	// Sluice itself after the run.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	s.rss = startRSSSampler(100*time.Millisecond, false, func() (int64, int) {
		kb, err := vmRSS(s.cmd.Process.Pid)
		if err != nil {
			return 0, 0
		}
		return kb, 1
	})
	if s.filtered {
		pid := s.cmd.Process.Pid
		s.pluginRSS = startRSSSampler(250*time.Millisecond, false, func() (int64, int) { return descendantsRSS(pid) })
	}

	// Ready when the MX port answers and the admin socket does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			return s, fmt.Errorf("sluice exited at start (%v):\n%s", s.waitErr, tailFile(s.logFile, 20))
		case <-ctx.Done():
			return s, ctx.Err()
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			// Without the server, status opens the data directory itself
			// and says it is not running.
			out, err := s.cli(ctx, "", "status", "--json")
			var st struct {
				Running bool `json:"running"`
			}
			if err == nil && json.Unmarshal(out, &st) == nil && st.Running {
				break
			}
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("sluice did not start within 30s:\n%s", tailFile(s.logFile, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s, nil
}

func (s *sluiceServer) name() string {
	if s.label != "" {
		return s.label
	}
	return "sluice"
}

func (s *sluiceServer) target() string       { return s.addr }
func (s *sluiceServer) sampler() *rssSampler { return s.rss }

func (s *sluiceServer) addUser(ctx context.Context) error {
	add := func() error {
		_, err := s.cli(ctx, "bench-password\n", "user", "add", recipient, "--password-stdin", "--quota", "0")
		return err
	}
	err := add()
	if err != nil && strings.Contains(err.Error(), "domain add") {
		// Older binaries create the config's domains only when serving.
		if _, err := s.cli(ctx, "", "domain", "add", "bench.test"); err != nil {
			return err
		}
		err = add()
	}
	return err
}

// cli runs a sluice subcommand against the config and returns its stdout.
func (s *sluiceServer) cli(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, s.bin, append(args, "-c", s.config)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("sluice %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// delivered returns the number of messages in the bench user's folders
// and, for an instance with filter stages, in quarantine.
func (s *sluiceServer) delivered(ctx context.Context) (int, error) {
	f, err := s.folders(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range f {
		n += c
	}
	return n, nil
}

// quarantineFolder is the key folders uses for the quarantine.
const quarantineFolder = "(quarantine)"

// folders returns the number of messages in each of the bench user's
// folders and, for an instance with filter stages, in quarantine (under
// quarantineFolder).
func (s *sluiceServer) folders(ctx context.Context) (map[string]int, error) {
	out, err := s.cli(ctx, "", "mailbox", "ls", recipient, "--json")
	if err != nil {
		return nil, err
	}
	var mbs []struct {
		Name     string `json:"name"`
		Messages int    `json:"messages"`
	}
	if err := json.Unmarshal(out, &mbs); err != nil {
		return nil, fmt.Errorf("sluice mailbox ls: %v", err)
	}
	f := map[string]int{}
	for _, mb := range mbs {
		f[mb.Name] += mb.Messages
	}
	if s.filtered {
		out, err := s.cli(ctx, "", "quarantine", "ls", "--json")
		if err != nil {
			return nil, err
		}
		var q []json.RawMessage
		if err := json.Unmarshal(out, &q); err != nil {
			return nil, fmt.Errorf("sluice quarantine ls: %v", err)
		}
		if len(q) > 0 {
			f[quarantineFolder] = len(q)
		}
	}
	return f, nil
}

// pluginStatus is a running plugin as 'sluice status --json' lists it.
type pluginStatus struct {
	Stage    string `json:"stage"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	PID      int    `json:"pid"`
	Restarts int64  `json:"restarts"`
}

// plugins returns the running plugins, from 'sluice status --json'.
func (s *sluiceServer) plugins(ctx context.Context) ([]pluginStatus, error) {
	out, err := s.cli(ctx, "", "status", "--json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Running bool           `json:"running"`
		Plugins []pluginStatus `json:"plugins"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("sluice status: %v", err)
	}
	if !st.Running {
		return nil, errors.New("sluice status: not running")
	}
	return st.Plugins, nil
}

// queueState is what 'sluice queue ls --json' says.
type queueState struct {
	n, held int
	lastErr string
}

func (s *sluiceServer) queue(ctx context.Context) (queueState, error) {
	out, err := s.cli(ctx, "", "queue", "ls", "--json")
	if err != nil {
		return queueState{}, err
	}
	var msgs []struct {
		Status string `json:"status"`
		Rcpts  []struct {
			LastError string `json:"last_error"`
		} `json:"rcpts"`
	}
	if err := json.Unmarshal(out, &msgs); err != nil {
		return queueState{}, fmt.Errorf("sluice queue ls: %v", err)
	}
	q := queueState{}
	for _, m := range msgs {
		if m.Status == "quarantine" {
			// Kept until an administrator acts: counted with the
			// deliveries, not waited for.
			continue
		}
		q.n++
		if m.Status == "hold" {
			q.held++
		}
		for _, r := range m.Rcpts {
			if r.LastError != "" {
				q.lastErr = r.LastError
			}
		}
	}
	return q, nil
}

// waitDrained waits until the mailbox holds want messages and the queue
// is empty, and returns when the queue was first seen empty.
//
// While the mailbox count is short of want it polls the count ('sluice
// mailbox ls', a few milliseconds) rather than the queue: with thousands
// of messages queued, 'sluice queue ls --json' takes about a second and
// much of a core on the server's side, which would slow the very delivery
// being measured. The queue is listed once the count is reached, or every
// 2 s while the count does not move (to see held messages or lost ones).
func (s *sluiceServer) waitDrained(ctx context.Context, want int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	last, lastChange, lastQueueCheck := -1, time.Now(), time.Time{}
	for {
		select {
		case <-s.exited:
			return time.Time{}, fmt.Errorf("sluice exited (%v):\n%s", s.waitErr, tailFile(s.logFile, 20))
		default:
		}
		n, err := s.delivered(ctx)
		if err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		if n != last {
			last, lastChange = n, now
		}
		if n >= want || (now.Sub(lastChange) > 2*time.Second && now.Sub(lastQueueCheck) > 2*time.Second) {
			q, err := s.queue(ctx)
			if err != nil {
				return time.Time{}, err
			}
			now, lastQueueCheck = time.Now(), time.Now()
			if q.n == 0 {
				return now, nil
			}
			if q.held == q.n {
				return time.Time{}, fmt.Errorf("%d messages left in the queue, all on hold (last error: %q)", q.held, q.lastErr)
			}
			if now.After(deadline) {
				return time.Time{}, fmt.Errorf("queue not empty after %v: %d messages, %d on hold (last error: %q); %d of %d in the mailbox", timeout, q.n, q.held, q.lastErr, n, want)
			}
		} else if now.After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d messages in the mailbox after %v", n, want, timeout)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// stop sends SIGTERM and waits for Sluice to exit (SIGKILL after 60s).
func (s *sluiceServer) stop() error {
	if s.rss != nil {
		s.rss.stop()
	}
	if s.pluginRSS != nil {
		s.pluginRSS.stop()
	}
	if s.cmd == nil || s.cmd.Process == nil || s.stopped {
		return nil
	}
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.waitErr != nil {
			return fmt.Errorf("sluice exited with %v after SIGTERM", s.waitErr)
		}
		return nil
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("sluice did not stop within 60s of SIGTERM; killed")
	}
}
