package clamdtest

import (
	"fmt"
	"net"
	"os"
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
