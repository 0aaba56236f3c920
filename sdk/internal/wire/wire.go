// Package wire is what both sides of the plugin protocol share, in one
// copy: the go-plugin handshake, the name a plugin is served under, the
// size limits of the gRPC messages, and the go-plugin glue that puts a
// filter's gRPC server (package sdk, in the plugin) and its client
// (package sdk/host, in Sluice) behind that name.
//
// The conversions between sdk's types and the protobuf messages live with
// the side that makes them: sdk turns envelopes and messages from the wire
// into sdk values and verdicts into protobuf; sdk/host the other way. (They
// need sdk's types, and sdk imports this package, so they cannot live here.)
package wire

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// ProtocolVersion is the version of the plugin protocol
// (sdk/proto/sluice/plugin/v1).
const ProtocolVersion = 1

// Handshake is shared by Sluice and its plugins. The cookie only keeps a
// plugin from being run by hand by mistake; it is not a security measure
// (Sluice can check plugin binaries against a SHA-256 instead).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "b6a3c0d1e2f7",
}

// PluginName is the name of the one plugin a plugin process serves, to
// Dispense from a go-plugin client.
const PluginName = "filter"

// ChunkSize is the largest piece of a message in one gRPC message.
const ChunkSize = 64 << 10

// MaxGRPCMessage bounds one gRPC message either way (a chunk is 64 KiB; a
// verdict or a header can be larger, but not this large).
const MaxGRPCMessage = 16 << 20

// Plugin is the go-plugin glue of a filter: Register registers the gRPC
// server around a filter (the plugin's side), NewClient makes the host's side
// from the connection. A side that is nil is not offered.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	Register  func(*grpc.Server)
	NewClient func(*grpc.ClientConn) any
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Register == nil {
		return errors.New("sdk: no filter to serve")
	}
	p.Register(s)
	return nil
}

// GRPCClient implements plugin.GRPCPlugin.
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	if p.NewClient == nil {
		return nil, errors.New("sdk: not a plugin host")
	}
	return p.NewClient(c), nil
}

// Set returns the plugin set of p, under PluginName.
func Set(p *Plugin) plugin.PluginSet { return plugin.PluginSet{PluginName: p} }

// RegisterFilter registers the gRPC server around filter, an sdk.Filter,
// on s. Package sdk sets it when it is loaded, so that sdk/host can serve
// a filter inside the host's process (for sdktest) without sdk exporting
// its server to plugin authors.
var RegisterFilter func(s *grpc.Server, filter any)

// ValidUTF8 replaces invalid UTF-8 with U+FFFD, which protobuf strings
// require.
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// The protocol's action enum is the wire encoding of verdict.Action, and
// these two functions are the one place that converts between them. The
// values are the same numbers; Junk has none (a filter cannot return it).

// ActionToPB encodes a filter's action; ok is false for an action a filter
// may not return.
func ActionToPB(a verdict.Action) (_ pluginpb.Action, ok bool) {
	if !a.Valid() {
		return 0, false
	}
	return pluginpb.Action(a), true
}

// ActionFromPB decodes an action from the wire; ok is false for a value
// the protocol does not define.
func ActionFromPB(a pluginpb.Action) (_ verdict.Action, ok bool) {
	v := verdict.Action(a)
	if !v.Valid() {
		return 0, false
	}
	return v, true
}

// HooksToPB and HooksFromPB convert the hooks of Describe.
func HooksToPB(hooks []verdict.Hook) []string {
	out := make([]string, len(hooks))
	for i, h := range hooks {
		out[i] = string(h)
	}
	return out
}

// HooksFromPB converts the hook names a plugin describes.
func HooksFromPB(hooks []string) []verdict.Hook {
	out := make([]verdict.Hook, len(hooks))
	for i, h := range hooks {
		out[i] = verdict.Hook(h)
	}
	return out
}
