package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/sdktest"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// rspamdPackage is the Debian package the integration test needs.
const rspamdPackage = "rspamd"

// rspamdStartTimeout bounds the start of rspamd. The first start with a
// new database directory takes about 14 s on a quiet machine (rspamd
// compiles its suffix list and regular expressions there); CI machines
// are shared and slower.
const rspamdStartTimeout = 3 * time.Minute

// testZone is what rspamd's DNS (the test's server) knows: the client
// 192.0.2.10 is mail.example.org, forward and reverse, and example.org
// publishes SPF and DMARC, so that a clean message is clean.
const testZone = `
10.2.0.192.in-addr.arpa. 300 IN PTR mail.example.org.
mail.example.org.        300 IN A   192.0.2.10
example.org.             300 IN A   192.0.2.10
example.org.             300 IN MX  10 mail.example.org.
example.org.             300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.example.org.      300 IN TXT "v=DMARC1; p=none"
example.com.             300 IN MX  10 mx.example.com.
mx.example.com.          300 IN A   192.0.2.20
`

// rspamdServer is a private rspamd started by a test.
type rspamdServer struct {
	// URL is the normal worker's base URL, for the plugin's url setting.
	URL string
	// Dir holds its configuration, database, run and log directories.
	Dir string
}

// startRspamd starts Debian's rspamd with the stock /etc/rspamd/rspamd.conf
// and a private LOCAL_CONFDIR made from testdata/rspamd: its DNS goes to
// dnsAddr only, the modules that reach the internet (RBLs, SURBL, fuzzy
// storage, maps, updates) are off, and the normal and controller workers
// listen on free 127.0.0.1 ports. Its database, run and log directories
// are in t.TempDir(). It is stopped when the test ends.
func startRspamd(t *testing.T, dnsAddr string) *rspamdServer {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		t.Fatalf("rspamd is not installed: this test needs Debian's %q package "+
			"(DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends %s)", rspamdPackage, rspamdPackage)
	}
	if _, err := os.Stat("/etc/rspamd/rspamd.conf"); err != nil {
		t.Fatalf("rspamd's stock configuration is missing (%v): reinstall Debian's %q package", err, rspamdPackage)
	}
	dir := t.TempDir()
	normal, controller := freePort(t), freePort(t)
	vars := strings.NewReplacer("{{DNS}}", dnsAddr, "{{NORMAL}}", strconv.Itoa(normal), "{{CONTROLLER}}", strconv.Itoa(controller))
	confDir := filepath.Join(dir, "etc")
	err = filepath.WalkDir("testdata/rspamd", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/rspamd", path)
		dst := filepath.Join(confDir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, []byte(vars.Replace(string(b))), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", "-c", "/etc/rspamd/rspamd.conf", "--var=LOCAL_CONFDIR=" + confDir}
	for _, sub := range []string{"db", "run", "log"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--var="+strings.ToUpper(sub)+"DIR="+p)
	}
	if os.Geteuid() == 0 {
		// rspamd refuses to run its workers as root: run them as the
		// package's _rspamd user, who must reach the directories.
		u, err := user.Lookup("_rspamd")
		if err != nil {
			t.Fatalf("user _rspamd is missing (%v): reinstall Debian's %q package", err, rspamdPackage)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{filepath.Dir(dir), dir} { // t.TempDir makes them 0700
			if err := os.Chmod(p, 0o711); err != nil {
				t.Fatal(err)
			}
		}
		for _, sub := range []string{"db", "run", "log"} {
			if err := os.Chown(filepath.Join(dir, sub), uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		args = append(args, "-u", "_rspamd", "-g", "_rspamd")
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that stopping it stops its workers too;
	// and it dies with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rspamd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	srv := &rspamdServer{URL: fmt.Sprintf("http://127.0.0.1:%d", normal), Dir: dir}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		out.Close()
		if t.Failed() {
			t.Logf("rspamd's log (%s):\n%s", dir, srv.logTail())
		}
	})

	start := time.Now()
	deadline := time.After(rspamdStartTimeout)
	for _, u := range []string{fmt.Sprintf("http://127.0.0.1:%d/ping", controller), srv.URL + "/ping"} {
		for !ping(u) {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("rspamd exited while starting (%v); its log:\n%s", err, srv.logTail())
			case <-deadline:
				t.Fatalf("rspamd did not answer %s within %v; its log:\n%s", u, rspamdStartTimeout, srv.logTail())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	t.Logf("rspamd ready on %s after %v", srv.URL, time.Since(start).Round(100*time.Millisecond))
	return srv
}

func ping(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
	return resp.StatusCode == 200 && strings.Contains(string(b), "pong")
}

// logTail returns the end of rspamd's log files.
func (s *rspamdServer) logTail() string {
	var b strings.Builder
	for _, f := range []string{"stdout.log", "log/rspamd.log"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, f))
		if err != nil {
			continue
		}
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		fmt.Fprintf(&b, "== %s\n%s\n", f, data)
	}
	return b.String()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gtube is rspamd's (and SpamAssassin's) test pattern for spam.
const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// TestRealRspamd runs the plugin against Debian's rspamd.
func TestRealRspamd(t *testing.T) {
	dns := dnstest.Start(t, testZone)
	srv := startRspamd(t, dns.Addr)
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": srv.URL, "timeout": "30s", "spam_header": "X-Spam"})
	env := &sdk.Envelope{
		QueueID: "01JTESTQUEUEID", ClientIP: netip.MustParseAddr("192.0.2.10"), HELO: "mail.example.org",
		MailFrom: "alice@example.org", RcptTo: []string{"bob@example.com"}, Listener: "mx", Pipeline: "inbound", Hostname: "mx.example.com",
	}
	header := "From: Alice <alice@example.org>\n" +
		"To: Bob <bob@example.com>\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\n" +
		"Message-ID: <%d@example.org>\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\n"

	t.Run("gtube", func(t *testing.T) {
		raw := fmt.Sprintf(header, 1) + "Subject: Test\n\n" + gtube + "\n"
		v, err := r.Check(context.Background(), sdktest.Message(t, raw, env))
		if err != nil {
			t.Fatalf("Check(GTUBE) error %v", err)
		}
		if v.Action != sdk.Reject || v.Code != 554 || v.EnhancedCode != "5.7.1" {
			t.Errorf("Check(GTUBE) = %v %d %s (%s), want reject 554 5.7.1", v.Action, v.Code, v.EnhancedCode, v.Reason)
		}
		t.Logf("GTUBE: %s", v.Reason)
		if !hasSymbol(v, "GTUBE") {
			t.Errorf("Check(GTUBE) symbols %v, want GTUBE", v.Symbols)
		}
	})

	t.Run("clean", func(t *testing.T) {
		raw := fmt.Sprintf(header, 2) + "Subject: Lunch on Friday\n\n" +
			"Hi Bob,\n\nShall we have lunch on Friday at noon, at the usual place?\n\nAlice\n"
		v, err := r.Check(context.Background(), sdktest.Message(t, raw, env))
		if err != nil {
			t.Fatalf("Check(clean) error %v", err)
		}
		t.Logf("clean message: %s; symbols %v", v.Reason, v.Symbols)
		if v.Action != sdk.Continue || !strings.Contains(v.Reason, actionNoAction) || len(v.AddHeaders) != 0 {
			t.Errorf("Check(clean) = %v (%s), headers %v, want continue after no action", v.Action, v.Reason, v.AddHeaders)
		}
		// SPF passes: rspamd asked the test's DNS, and its symbols come
		// through with their options.
		spf := findSymbol(v, "R_SPF_ALLOW")
		if spf == nil || !strings.Contains(spf.Detail, "192.0.2.0/24") {
			t.Errorf("Check(clean) symbols %v, want R_SPF_ALLOW with the SPF mechanism in its detail", v.Symbols)
		}
		if len(v.Symbols) < 5 {
			t.Errorf("Check(clean) has %d symbols, want rspamd's usual many", len(v.Symbols))
		}
		var sum float64
		for _, s := range v.Symbols {
			sum += s.Score
		}
		if diff := sum - v.Score; diff > 0.01 || diff < -0.01 {
			t.Errorf("Check(clean): symbols add up to %v, score is %v", sum, v.Score)
		}
	})

	t.Run("null sender, several recipients", func(t *testing.T) {
		e := *env
		e.MailFrom, e.RcptTo = "", []string{"bob@example.com", "carol@example.com"}
		raw := fmt.Sprintf(header, 3) + "Subject: Delivery report\n\nYour message was delivered.\n"
		if _, err := r.Check(context.Background(), sdktest.Message(t, raw, &e)); err != nil {
			t.Fatalf("Check(null sender) error %v", err)
		}
	})
}

func findSymbol(v sdk.Verdict, name string) *sdk.Symbol {
	for i := range v.Symbols {
		if v.Symbols[i].Name == name {
			return &v.Symbols[i]
		}
	}
	return nil
}

func hasSymbol(v sdk.Verdict, name string) bool { return findSymbol(v, name) != nil }
