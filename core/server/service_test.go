package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// A port in use is an error from Start, which then leaves nothing bound:
// the listeners bound before the one that failed are closed again, so
// that a second Start, once the port is free, works.
func TestStartPortInUse(t *testing.T) {
	cfg := testConfig(t)
	mx := freePort(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg.SMTP.MX.Listen = []string{mx}
	cfg.IMAP.Listen = []string{busy.Addr().String()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("Start succeeded with the IMAP port in use")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("Start: %v, want an error saying the address is in use", err)
	}
	l, err := net.Listen("tcp", mx)
	if err != nil {
		t.Fatalf("the MX port stayed bound after the failed Start: %v", err)
	}
	l.Close()
	busy.Close()
	start(t, cfg)
}

// fakeService records its calls; its Shutdown lasts until ctx is done
// when hang is set.
type fakeService struct {
	listenErr error
	hang      bool
	events    chan string
}

func (f *fakeService) Listen() error { f.events <- "listen"; return f.listenErr }
func (f *fakeService) Serve()        { f.events <- "serve" }
func (f *fakeService) Shutdown(ctx context.Context) error {
	f.events <- "shutdown"
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// Listeners bound before one that fails to listen are shut down again;
// those after it are not touched.
func TestListenAllUnbindsOnError(t *testing.T) {
	a := &fakeService{events: make(chan string, 10)}
	b := &fakeService{events: make(chan string, 10), listenErr: errors.New("in use")}
	c := &fakeService{events: make(chan string, 10)}
	if err := listenAll([]listener{{svc: a}, {svc: b}, {svc: c}}); err == nil || err.Error() != "in use" {
		t.Fatalf("listenAll = %v, want b's error", err)
	}
	for _, w := range []struct {
		f    *fakeService
		want string
	}{{a, "listen shutdown"}, {b, "listen"}, {c, ""}} {
		close(w.f.events)
		var got []string
		for e := range w.f.events {
			got = append(got, e)
		}
		if strings.Join(got, " ") != w.want {
			t.Errorf("calls %q, want %q", got, w.want)
		}
	}
}

// The listeners stop side by side under one deadline: one that is cut off
// by it is a warning, not an error, and does not hold the others up.
func TestShutdownAllSideBySide(t *testing.T) {
	slow := &fakeService{events: make(chan string, 10), hang: true}
	quick := &fakeService{events: make(chan string, 10)}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	// The deadline's length does not matter: every listener is shut down
	// whenever it comes.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- shutdownAll(ctx, []listener{{svc: slow, cutOff: "slow cut off"}, {svc: quick, cutOff: "quick cut off"}}, log)
	}()
	for _, f := range []*fakeService{slow, quick} {
		select {
		case <-f.events:
		case <-time.After(10 * time.Second): // a safety ceiling
			t.Fatal("a listener was not shut down while another was still busy")
		}
	}
	if err := <-done; err != nil {
		t.Errorf("shutdownAll = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "slow cut off") || strings.Contains(logs.String(), "quick cut off") {
		t.Errorf("log %q, want the slow listener's warning only", logs.String())
	}
}
