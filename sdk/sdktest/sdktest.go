// Package sdktest runs a filter over the real plugin protocol (gRPC, as
// Sluice talks to plugin processes) inside a test, so that a plugin's tests
// exercise the same path as production without building a binary.
//
//	remote := sdktest.Start(t, &myFilter{}, map[string]any{"pattern": "viagra"})
//	v, err := remote.Check(ctx, sdktest.Message(t, raw, nil))
package sdktest

import (
	"bufio"
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
)

// Start serves f in this process over gRPC, describes it and configures it
// with config (marshalled to JSON; nil for none) and a state directory in
// t.TempDir(), and returns the host's side. The connection is closed when
// the test ends.
func Start(t testing.TB, f sdk.Filter, config any) *host.Remote {
	t.Helper()
	r, info := start(t, f)
	if err := configure(r, config, t.TempDir()); err != nil {
		t.Fatalf("sdktest: Configure: %v", err)
	}
	want := sdk.Hooks(f)
	if !slices.Equal(info.Hooks, want) {
		t.Fatalf("sdktest: Describe says hooks %v, the filter implements %v", info.Hooks, want)
	}
	return r
}

// StartUnconfigured is Start without the Configure call, for testing how a
// filter refuses a configuration.
func StartUnconfigured(t testing.TB, f sdk.Filter) *host.Remote {
	t.Helper()
	r, _ := start(t, f)
	return r
}

func start(t testing.TB, f sdk.Filter) (*host.Remote, host.Info) {
	client, _ := plugin.TestPluginGRPCConn(t, false, host.PluginSetFor(f))
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(host.PluginName)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	r := raw.(*host.Remote)
	info, err := r.Describe(context.Background())
	if err != nil {
		t.Fatalf("sdktest: Describe: %v", err)
	}
	return r, info
}

// Configure sends config (marshalled to JSON; nil for none) to a filter
// started with StartUnconfigured. The stage has no state directory; use
// r.Configure directly to give it one.
func Configure(r *host.Remote, config any) error { return configure(r, config, "") }

func configure(r *host.Remote, config any, stateDir string) error {
	data := []byte("{}")
	if config != nil {
		var err error
		if data, err = json.Marshal(config); err != nil {
			return err
		}
	}
	return r.Configure(context.Background(), sdk.Config{Stage: "test", JSON: data, StateDir: stateDir})
}

// Message builds a message from its raw text (LF line endings are turned
// into CRLF) and an envelope (nil for a default one from 192.0.2.1).
func Message(t testing.TB, raw string, env *sdk.Envelope) *sdk.Message {
	t.Helper()
	raw = strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")
	if env == nil {
		env = &sdk.Envelope{
			QueueID: "0000000000000000", ClientIP: netip.MustParseAddr("192.0.2.1"), HELO: "client.example",
			MailFrom: "sender@example.org", RcptTo: []string{"rcpt@example.com"}, Listener: "mx", Pipeline: "inbound", Hostname: "mx.example.com",
		}
	}
	h, err := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("sdktest: header: %v", err)
	}
	return &sdk.Message{Envelope: *env, Header: h, Size: int64(len(raw)), Data: strings.NewReader(raw)}
}
