// Package host is the host side of the plugin protocol: what Sluice and
// test harnesses use to start and call a plugin; plugin authors do not
// need it.
//
// Sluice's core/pluginhost starts plugin processes with go-plugin, set up
// with PluginConfig and GRPCDialOptions, and calls them through a Remote.
// sdktest serves a filter inside the test's process with PluginSetFor.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
	"github.com/sluice-mail/sluice/sdk/internal/wire"
)

// PluginName is the name to Dispense from a go-plugin client.
const PluginName = wire.PluginName

// PluginConfig returns what a host needs to start and talk to plugins
// with go-plugin: the handshake and the plugin set.
func PluginConfig() (plugin.HandshakeConfig, plugin.PluginSet) {
	return wire.Handshake, wire.Set(&wire.Plugin{NewClient: newRemote})
}

// GRPCDialOptions are the options a host dials plugins with.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(wire.MaxGRPCMessage), grpc.MaxCallSendMsgSize(wire.MaxGRPCMessage))}
}

// PluginSetFor returns the plugin set that serves f and makes its Remote,
// for running a filter in the host's own process (sdktest uses it).
func PluginSetFor(f sdk.Filter) plugin.PluginSet {
	return wire.Set(&wire.Plugin{Register: func(s *grpc.Server) { wire.RegisterFilter(s, f) }, NewClient: newRemote})
}

func newRemote(c *grpc.ClientConn) any { return &Remote{c: pluginpb.NewFilterClient(c)} }

// Info describes a plugin.
type Info struct {
	Name    string
	Version string
	Hooks   []sdk.Hook
}

// Has reports whether the plugin implements a hook.
func (i Info) Has(hook sdk.Hook) bool { return slices.Contains(i.Hooks, hook) }

// HookList returns the hooks separated by commas, "mail,data", for logs
// and listings.
func (i Info) HookList() string {
	return strings.Join(wire.HooksToPB(i.Hooks), ",")
}

// Remote is the host's side of a plugin: a Filter (with every add-on
// interface) whose calls go to the plugin process. Call Describe first;
// calling a hook the plugin does not implement returns an error.
type Remote struct {
	c pluginpb.FilterClient
}

// Describe asks the plugin for its name, version and hooks.
func (r *Remote) Describe(ctx context.Context) (Info, error) {
	resp, err := r.c.Describe(ctx, &pluginpb.DescribeRequest{})
	if err != nil {
		return Info{}, err
	}
	return Info{Name: resp.GetName(), Version: resp.GetVersion(), Hooks: wire.HooksFromPB(resp.GetHooks())}, nil
}

// Configure implements sdk.Filter.
func (r *Remote) Configure(ctx context.Context, cfg sdk.Config) error {
	_, err := r.c.Configure(ctx, &pluginpb.ConfigureRequest{Stage: cfg.Stage, ConfigJson: cfg.JSON, StateDir: cfg.StateDir})
	return err
}

// CheckConnect implements sdk.ConnectChecker.
func (r *Remote) CheckConnect(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	v, err := r.c.CheckConnect(ctx, &pluginpb.ConnectRequest{Envelope: envelopeToPB(env)})
	return verdictFromPB(v, err)
}

// CheckMail implements sdk.MailChecker.
func (r *Remote) CheckMail(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	v, err := r.c.CheckMail(ctx, &pluginpb.MailRequest{Envelope: envelopeToPB(env)})
	return verdictFromPB(v, err)
}

// CheckRcpt implements sdk.RcptChecker.
func (r *Remote) CheckRcpt(ctx context.Context, env *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	v, err := r.c.CheckRcpt(ctx, &pluginpb.RcptRequest{Envelope: envelopeToPB(env), Rcpt: rcpt})
	return verdictFromPB(v, err)
}

// Check implements sdk.Filter: it streams the message to the plugin.
func (r *Remote) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	stream, err := r.c.CheckData(ctx)
	if err != nil {
		return sdk.Verdict{}, err
	}
	if err := sendMessage(stream, msg, false); err != nil {
		return sdk.Verdict{}, err
	}
	v, err := stream.CloseAndRecv()
	return verdictFromPB(v, err)
}

// Learn implements sdk.Learner.
func (r *Remote) Learn(ctx context.Context, msg *sdk.Message, spam bool) error {
	stream, err := r.c.Learn(ctx)
	if err != nil {
		return err
	}
	if err := sendMessage(stream, msg, spam); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// chunkBufs recycles the buffers messages are read into for sending.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, wire.ChunkSize); return &b }}

// sendMessage streams msg in chunks. The plugin may answer before the end;
// then Send returns io.EOF and the caller's CloseAndRecv gets the answer.
func sendMessage(stream interface {
	Send(*pluginpb.DataChunk) error
}, msg *sdk.Message, spam bool) error {
	first := &pluginpb.DataChunk{Envelope: envelopeToPB(&msg.Envelope), Size: msg.Size, Spam: spam}
	for _, f := range msg.Header {
		// Protobuf strings must be UTF-8; a header with raw 8-bit bytes
		// (Latin-1, say) would fail the whole call. The parsed header is
		// a convenience: the exact bytes are in the message data.
		first.Header = append(first.Header, &pluginpb.HeaderField{Name: wire.ValidUTF8(f.Name), Value: wire.ValidUTF8(f.Value)})
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	chunk := first
	for {
		n, rerr := 0, error(nil)
		if msg.Data != nil {
			n, rerr = io.ReadFull(msg.Data, buf)
		} else {
			rerr = io.EOF
		}
		if n > 0 {
			chunk.Data = buf[:n]
		}
		if n > 0 || chunk == first {
			if err := stream.Send(chunk); err != nil {
				if errors.Is(err, io.EOF) {
					return nil // the plugin answered early
				}
				return err
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return nil
		case rerr != nil:
			return fmt.Errorf("sdk: reading the message: %w", rerr)
		}
		chunk = &pluginpb.DataChunk{}
	}
}

func envelopeToPB(e *sdk.Envelope) *pluginpb.Envelope {
	if e == nil {
		return nil
	}
	ip := ""
	if e.ClientIP.IsValid() {
		ip = e.ClientIP.String()
	}
	u := wire.ValidUTF8
	rcpts := make([]string, len(e.RcptTo))
	for i, r := range e.RcptTo {
		rcpts[i] = u(r)
	}
	addrs := make([]string, len(e.AuthAddresses))
	for i, a := range e.AuthAddresses {
		addrs[i] = u(a)
	}
	return &pluginpb.Envelope{
		QueueId: e.QueueID, ClientIp: ip, Helo: u(e.HELO), Tls: e.TLS, AuthUser: u(e.AuthUser),
		MailFrom: u(e.MailFrom), RcptTo: rcpts, Listener: e.Listener, Pipeline: e.Pipeline, Hostname: e.Hostname,
		AuthAddresses: addrs,
	}
}

// ErrBadVerdict is returned when a plugin sends a verdict that cannot be
// right: an unknown action.
var ErrBadVerdict = errors.New("sdk: plugin returned an invalid verdict")

func verdictFromPB(pv *pluginpb.Verdict, err error) (sdk.Verdict, error) {
	if err != nil {
		return sdk.Verdict{}, err
	}
	action, ok := wire.ActionFromPB(pv.GetAction())
	if !ok {
		return sdk.Verdict{}, fmt.Errorf("%w: action %d", ErrBadVerdict, int(pv.GetAction()))
	}
	v := sdk.Verdict{
		Action: action, Code: int(pv.GetCode()), EnhancedCode: pv.GetEnhancedCode(),
		Text: pv.GetText(), Reason: pv.GetReason(), Score: pv.GetScore(),
	}
	for _, h := range pv.GetAddHeaders() {
		v.AddHeaders = append(v.AddHeaders, sdk.HeaderField{Name: h.GetName(), Value: h.GetValue()})
	}
	for _, ar := range pv.GetAuthResults() {
		a := sdk.AuthResult{Method: ar.GetMethod(), Result: ar.GetResult(), Reason: ar.GetReason()}
		for _, p := range ar.GetProperties() {
			a.Properties = append(a.Properties, sdk.AuthProperty{Type: p.GetType(), Name: p.GetName(), Value: p.GetValue()})
		}
		v.AuthResults = append(v.AuthResults, a)
	}
	for _, s := range pv.GetSymbols() {
		v.Symbols = append(v.Symbols, sdk.Symbol{Name: s.GetName(), Score: s.GetScore(), Detail: s.GetDetail()})
	}
	return v, nil
}

var (
	_ sdk.Filter         = (*Remote)(nil)
	_ sdk.ConnectChecker = (*Remote)(nil)
	_ sdk.MailChecker    = (*Remote)(nil)
	_ sdk.RcptChecker    = (*Remote)(nil)
	_ sdk.Learner        = (*Remote)(nil)
)
