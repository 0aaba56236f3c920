package clamdtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pingUnix is ping over the unix socket.
func pingUnix(path string) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	if string(buf[:n]) != "PONG\x00" {
		return fmt.Errorf("PING answered %q, %v", buf[:n], err)
	}
	return nil
}

func TestStartStop(t *testing.T) {
	c := Start(t)
	tcp := strings.TrimPrefix(c.Addr, "tcp://")
	sock := strings.TrimPrefix(c.Socket, "unix://")
	if err := ping(tcp); err != nil {
		t.Errorf("PING %s: %v", c.Addr, err)
	}
	if err := pingUnix(sock); err != nil {
		t.Errorf("PING %s: %v", c.Socket, err)
	}
	if b, err := os.ReadFile(c.EICARFile); err != nil || string(b) != string(EICAR()) {
		t.Errorf("EICARFile: %v", err)
	}
	if !strings.Contains(c.Log(), "Loaded 3 signatures") {
		t.Errorf("clamd did not load the 3 test signatures:\n%s", c.Log())
	}
	c.Stop()
	if err := ping(tcp); err == nil {
		t.Errorf("PING %s after Stop answered", c.Addr)
	}
	if err := pingUnix(sock); err == nil {
		t.Errorf("PING %s after Stop answered", c.Socket)
	}
	c.Stop() // again, harmlessly
}

func TestRunOptions(t *testing.T) {
	// A directory too long for a unix socket path: the socket goes
	// elsewhere, and Stop removes that.
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	c, err := Run(dir, Options{MaxThreads: 2, StreamMaxLength: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conf, err := os.ReadFile(filepath.Join(dir, "clamd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nMaxThreads 2\n", "\nStreamMaxLength 1048576\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("clamd.conf has no %q:\n%s", want, conf)
		}
	}
	sock := strings.TrimPrefix(c.Socket, "unix://")
	if strings.HasPrefix(sock, dir) || len(sock) > 100 {
		t.Errorf("socket %s", sock)
	}
	if err := pingUnix(sock); err != nil {
		t.Errorf("PING %s: %v", c.Socket, err)
	}
	if err := ping(strings.TrimPrefix(c.Addr, "tcp://")); err != nil {
		t.Errorf("PING %s: %v", c.Addr, err)
	}
	if c.Pid() <= 0 || c.Exited() != nil {
		t.Errorf("running: Pid %d, Exited %v", c.Pid(), c.Exited())
	}
	c.Stop()
	if st := c.Exited(); st == nil || !st.Exited() {
		t.Errorf("after Stop: Exited = %v, want an exit (not a signal)", st)
	}
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("the socket's directory after Stop: %v", err)
	}
}

func TestStartDefaults(t *testing.T) {
	c := Start(t)
	conf, err := os.ReadFile(filepath.Join(c.Dir, "clamd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nMaxThreads 4\n", fmt.Sprintf("\nStreamMaxLength %d\n", StreamMaxLength)} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("clamd.conf has no %q:\n%s", want, conf)
		}
	}
}
