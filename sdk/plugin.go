package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
)

// ProtocolVersion is the version of the plugin protocol this SDK speaks
// (sdk/proto/sluice/plugin/v1).
const ProtocolVersion = 1

// handshake is shared by Sluice and its plugins. The cookie only keeps a
// plugin from being run by hand by mistake; it is not a security measure
// (Sluice can check plugin binaries against a SHA-256 instead).
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "b6a3c0d1e2f7",
}

// HostPIDEnv is the environment variable in which a host (Sluice's
// core/pluginhost) passes its process ID to the plugins it starts. A plugin
// whose parent is no longer that process has lost its host: Serve exits,
// and a process holding a plugin's state file can be told from one that
// should not (plugins/internal/statelock).
const HostPIDEnv = "SLUICE_HOST_PID"

// pluginName is the name of the one plugin a plugin process serves.
const pluginName = "filter"

// chunkSize is the largest piece of a message in one gRPC message.
const chunkSize = 64 << 10

// maxGRPCMessage bounds one gRPC message either way (a chunk is 64 KiB; a
// verdict or a header can be larger, but not this large).
const maxGRPCMessage = 16 << 20

// Serve runs f as a Sluice plugin and does not return. Started by hand
// rather than by Sluice, it says what it is and exits with status 1.
//
// A plugin never outlives its host: Serve exits (status 1) when its parent
// process changes, which happens when the parent dies, even by SIGKILL,
// and the plugin is handed to init; and at once when the host HostPIDEnv
// names is not among its ancestors. Sluice on Linux also has the kernel
// kill its plugins when it dies; this covers other systems and other
// hosts.
//
// Run with the single argument ConfigReferenceFlag, it prints the filter's
// configuration reference (see ConfigDocumenter) and exits.
func Serve(f Filter) {
	if len(os.Args) == 2 && os.Args[1] == ConfigReferenceFlag {
		os.Exit(printReference(os.Stdout, os.Stderr, f))
	}
	if os.Getenv(handshake.MagicCookieKey) != handshake.MagicCookieValue {
		name := filepath.Base(os.Args[0])
		fmt.Fprintf(os.Stderr, "%s is a Sluice filter plugin (protocol version %d).\n"+
			"Sluice starts it for the pipeline stages that name it; it does nothing on its own.\n"+
			"Try: sluice pipeline test MESSAGE.eml\n", name, ProtocolVersion)
		os.Exit(1)
	}
	logger := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Info, JSONFormat: true})
	// What the filter logs with the standard log package reaches Sluice's
	// log at the level its prefix says ("[WARN] ..."), info by default.
	log.SetFlags(0)
	log.SetOutput(logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.NoLevel}))
	if host, missing := hostMissing(); missing {
		logger.Error("the host is gone: exiting", "host_pid", host)
		os.Exit(1)
	}
	go watchHost(os.Getppid(), hostPollInterval, func(parent, now int) {
		logger.Error("the host is gone: exiting", "parent_pid", parent, "new_parent_pid", now)
		os.Exit(1)
	})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{pluginName: &filterPlugin{impl: f}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(maxGRPCMessage), grpc.MaxSendMsgSize(maxGRPCMessage))
			return grpc.NewServer(opts...)
		},
		Logger: logger,
	})
}

// hostPollInterval is how often a plugin looks whether its parent is
// still the one it started under: one getppid system call.
const hostPollInterval = time.Second

// hostMissing reports whether the host that HostPIDEnv names is not among
// this process's ancestors: it died before the plugin got going. (An
// ancestor rather than the parent: a host may start a plugin through a
// wrapper program.) Without the variable, or without /proc to look in,
// it says false.
func hostMissing() (int, bool) {
	host, err := strconv.Atoi(os.Getenv(HostPIDEnv))
	if err != nil || host <= 0 {
		return 0, false
	}
	pid := os.Getppid()
	for range 64 {
		if pid == host {
			return host, false
		}
		if pid <= 1 {
			return host, true
		}
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return host, false
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(f) < 2 {
			return host, false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return host, false
}

// watchHost calls gone, and returns, once this process's parent is not
// parent, checking every interval. When the parent (the host, or a
// wrapper the host started, which dies with it) dies, the process is
// handed to init or a subreaper, so its parent changes; the old parent's
// ID cannot come back while the process lives.
//
// Watching the gRPC connection instead would misfire: a host's idle
// connection may be closed and redialled later.
func watchHost(parent int, every time.Duration, gone func(parent, now int)) {
	for {
		if ppid := os.Getppid(); ppid != parent {
			gone(parent, ppid)
			return
		}
		time.Sleep(every)
	}
}

// HostConfig returns what a host needs to start and talk to plugins with
// go-plugin: the handshake and the plugin set. core/pluginhost uses it;
// plugin authors do not need it.
func HostConfig() (plugin.HandshakeConfig, plugin.PluginSet) {
	return handshake, plugin.PluginSet{pluginName: &filterPlugin{}}
}

// PluginName is the name to Dispense from a go-plugin client.
const PluginName = pluginName

// GRPCDialOptions are the options a host dials plugins with.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxGRPCMessage), grpc.MaxCallSendMsgSize(maxGRPCMessage))}
}

// filterPlugin is the go-plugin glue: on the plugin side it registers the
// gRPC server around a Filter, on the host side it makes the client.
type filterPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Filter
}

func (p *filterPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterFilterServer(s, &grpcServer{impl: p.impl})
	return nil
}

func (p *filterPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Remote{c: pluginpb.NewFilterClient(c)}, nil
}

// Info describes a plugin.
type Info struct {
	Name    string
	Version string
	Hooks   []string
}

// Has reports whether the plugin implements a hook.
func (i Info) Has(hook string) bool {
	for _, h := range i.Hooks {
		if h == hook {
			return true
		}
	}
	return false
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
	return Info{Name: resp.GetName(), Version: resp.GetVersion(), Hooks: resp.GetHooks()}, nil
}

// Configure implements Filter.
func (r *Remote) Configure(ctx context.Context, cfg Config) error {
	_, err := r.c.Configure(ctx, &pluginpb.ConfigureRequest{Stage: cfg.Stage, ConfigJson: cfg.JSON, StateDir: cfg.StateDir})
	return err
}

// CheckConnect implements ConnectChecker.
func (r *Remote) CheckConnect(ctx context.Context, env *Envelope) (Verdict, error) {
	v, err := r.c.CheckConnect(ctx, &pluginpb.ConnectRequest{Envelope: envelopeToPB(env)})
	return verdictFromPB(v, err)
}

// CheckMail implements MailChecker.
func (r *Remote) CheckMail(ctx context.Context, env *Envelope) (Verdict, error) {
	v, err := r.c.CheckMail(ctx, &pluginpb.MailRequest{Envelope: envelopeToPB(env)})
	return verdictFromPB(v, err)
}

// CheckRcpt implements RcptChecker.
func (r *Remote) CheckRcpt(ctx context.Context, env *Envelope, rcpt string) (Verdict, error) {
	v, err := r.c.CheckRcpt(ctx, &pluginpb.RcptRequest{Envelope: envelopeToPB(env), Rcpt: rcpt})
	return verdictFromPB(v, err)
}

// Check implements Filter: it streams the message to the plugin.
func (r *Remote) Check(ctx context.Context, msg *Message) (Verdict, error) {
	stream, err := r.c.CheckData(ctx)
	if err != nil {
		return Verdict{}, err
	}
	if err := sendMessage(stream, msg, false); err != nil {
		return Verdict{}, err
	}
	v, err := stream.CloseAndRecv()
	return verdictFromPB(v, err)
}

// Learn implements Learner.
func (r *Remote) Learn(ctx context.Context, msg *Message, spam bool) error {
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
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// sendMessage streams msg in chunks. The plugin may answer before the end;
// then Send returns io.EOF and the caller's CloseAndRecv gets the answer.
func sendMessage(stream interface {
	Send(*pluginpb.DataChunk) error
}, msg *Message, spam bool) error {
	first := &pluginpb.DataChunk{Envelope: envelopeToPB(&msg.Envelope), Size: msg.Size, Spam: spam}
	for _, f := range msg.Header {
		// Protobuf strings must be UTF-8; a header with raw 8-bit bytes
		// (Latin-1, say) would fail the whole call. The parsed header is
		// a convenience: the exact bytes are in the message data.
		first.Header = append(first.Header, &pluginpb.HeaderField{Name: validUTF8(f.Name), Value: validUTF8(f.Value)})
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

// grpcServer serves a Filter in the plugin process.
type grpcServer struct {
	pluginpb.UnimplementedFilterServer
	impl Filter
}

// guard turns a panic in the filter into an error for this call, so that
// one bad message does not take the plugin down.
func guard(err *error) {
	if r := recover(); r != nil {
		*err = status.Errorf(codes.Internal, "filter panicked: %v\n%s", r, debug.Stack())
	}
}

func (s *grpcServer) Describe(context.Context, *pluginpb.DescribeRequest) (*pluginpb.DescribeResponse, error) {
	name, version := filepath.Base(os.Args[0]), ""
	if d, ok := s.impl.(Describer); ok {
		name, version = d.Describe()
	}
	return &pluginpb.DescribeResponse{Name: name, Version: version, Hooks: Hooks(s.impl)}, nil
}

func (s *grpcServer) Configure(ctx context.Context, req *pluginpb.ConfigureRequest) (_ *pluginpb.ConfigureResponse, err error) {
	defer guard(&err)
	cfg := Config{Stage: req.GetStage(), StateDir: req.GetStateDir(), JSON: req.GetConfigJson()}
	if err := s.impl.Configure(ctx, cfg); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pluginpb.ConfigureResponse{}, nil
}

func (s *grpcServer) CheckConnect(ctx context.Context, req *pluginpb.ConnectRequest) (_ *pluginpb.Verdict, err error) {
	defer guard(&err)
	c, ok := s.impl.(ConnectChecker)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "no connect hook")
	}
	return verdictToPB(c.CheckConnect(ctx, envelopeFromPB(req.GetEnvelope())))
}

func (s *grpcServer) CheckMail(ctx context.Context, req *pluginpb.MailRequest) (_ *pluginpb.Verdict, err error) {
	defer guard(&err)
	c, ok := s.impl.(MailChecker)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "no mail hook")
	}
	return verdictToPB(c.CheckMail(ctx, envelopeFromPB(req.GetEnvelope())))
}

func (s *grpcServer) CheckRcpt(ctx context.Context, req *pluginpb.RcptRequest) (_ *pluginpb.Verdict, err error) {
	defer guard(&err)
	c, ok := s.impl.(RcptChecker)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "no rcpt hook")
	}
	return verdictToPB(c.CheckRcpt(ctx, envelopeFromPB(req.GetEnvelope()), req.GetRcpt()))
}

func (s *grpcServer) CheckData(stream pluginpb.Filter_CheckDataServer) (err error) {
	defer guard(&err)
	msg, _, err := receiveMessage(stream)
	if err != nil {
		return err
	}
	v, err := verdictToPB(s.impl.Check(stream.Context(), msg))
	if err != nil {
		return err
	}
	return stream.SendAndClose(v)
}

func (s *grpcServer) Learn(stream pluginpb.Filter_LearnServer) (err error) {
	defer guard(&err)
	l, ok := s.impl.(Learner)
	if !ok {
		return status.Error(codes.Unimplemented, "no learn hook")
	}
	msg, spam, err := receiveMessage(stream)
	if err != nil {
		return err
	}
	if err := l.Learn(stream.Context(), msg, spam); err != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	io.Copy(io.Discard, msg.Data)
	return stream.SendAndClose(&pluginpb.LearnResponse{})
}

func receiveMessage(stream interface {
	Recv() (*pluginpb.DataChunk, error)
}) (*Message, bool, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, false, err
	}
	msg := &Message{Envelope: *envelopeFromPB(first.GetEnvelope()), Size: first.GetSize()}
	for _, f := range first.GetHeader() {
		msg.Header = append(msg.Header, HeaderField{Name: f.GetName(), Value: f.GetValue()})
	}
	msg.Data = &chunkReader{stream: stream, buf: first.GetData()}
	return msg, first.GetSpam(), nil
}

// chunkReader reads a message from the chunks of a stream.
type chunkReader struct {
	stream interface {
		Recv() (*pluginpb.DataChunk, error)
	}
	buf []byte
	err error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		c, err := r.stream.Recv()
		if err != nil {
			r.err = err
			if err != io.EOF {
				r.err = fmt.Errorf("sdk: receiving the message: %w", err)
			}
			continue
		}
		r.buf = c.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func envelopeToPB(e *Envelope) *pluginpb.Envelope {
	if e == nil {
		return nil
	}
	ip := ""
	if e.ClientIP.IsValid() {
		ip = e.ClientIP.String()
	}
	rcpts := make([]string, len(e.RcptTo))
	for i, r := range e.RcptTo {
		rcpts[i] = validUTF8(r)
	}
	addrs := make([]string, len(e.AuthAddresses))
	for i, a := range e.AuthAddresses {
		addrs[i] = validUTF8(a)
	}
	return &pluginpb.Envelope{
		QueueId: e.QueueID, ClientIp: ip, Helo: validUTF8(e.HELO), Tls: e.TLS, AuthUser: validUTF8(e.AuthUser),
		MailFrom: validUTF8(e.MailFrom), RcptTo: rcpts, Listener: e.Listener, Pipeline: e.Pipeline, Hostname: e.Hostname,
		AuthAddresses: addrs,
	}
}

// validUTF8 replaces invalid UTF-8 with U+FFFD, which protobuf strings
// require.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func envelopeFromPB(e *pluginpb.Envelope) *Envelope {
	ip, _ := netip.ParseAddr(e.GetClientIp())
	return &Envelope{
		QueueID: e.GetQueueId(), ClientIP: ip, HELO: e.GetHelo(), TLS: e.GetTls(), AuthUser: e.GetAuthUser(),
		MailFrom: e.GetMailFrom(), RcptTo: e.GetRcptTo(), Listener: e.GetListener(), Pipeline: e.GetPipeline(), Hostname: e.GetHostname(),
		AuthAddresses: e.GetAuthAddresses(),
	}
}

// verdictToPB converts a filter's answer for the wire. A filter error
// becomes a gRPC error; a verdict with an action that does not exist is
// the filter's bug and is reported the same way.
func verdictToPB(v Verdict, err error) (*pluginpb.Verdict, error) {
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	if !v.Action.Valid() {
		return nil, status.Errorf(codes.Internal, "filter returned an unknown action %d", int(v.Action))
	}
	u := validUTF8
	pv := &pluginpb.Verdict{
		Action: pluginpb.Action(v.Action), Code: int32(v.Code), EnhancedCode: u(v.EnhancedCode), Text: u(v.Text),
		Reason: u(v.Reason), Score: v.Score,
	}
	for _, h := range v.AddHeaders {
		pv.AddHeaders = append(pv.AddHeaders, &pluginpb.HeaderField{Name: u(h.Name), Value: u(h.Value)})
	}
	for _, ar := range v.AuthResults {
		p := &pluginpb.AuthResult{Method: u(ar.Method), Result: u(ar.Result), Reason: u(ar.Reason)}
		for _, prop := range ar.Properties {
			p.Properties = append(p.Properties, &pluginpb.AuthProperty{Type: u(prop.Type), Name: u(prop.Name), Value: u(prop.Value)})
		}
		pv.AuthResults = append(pv.AuthResults, p)
	}
	for _, s := range v.Symbols {
		pv.Symbols = append(pv.Symbols, &pluginpb.Symbol{Name: u(s.Name), Score: s.Score, Detail: u(s.Detail)})
	}
	return pv, nil
}

// ErrBadVerdict is returned by the host side when a plugin sends a verdict
// that cannot be right: an unknown action.
var ErrBadVerdict = errors.New("sdk: plugin returned an invalid verdict")

func verdictFromPB(pv *pluginpb.Verdict, err error) (Verdict, error) {
	if err != nil {
		return Verdict{}, err
	}
	v := Verdict{
		Action: Action(pv.GetAction()), Code: int(pv.GetCode()), EnhancedCode: pv.GetEnhancedCode(),
		Text: pv.GetText(), Reason: pv.GetReason(), Score: pv.GetScore(),
	}
	if !v.Action.Valid() {
		return Verdict{}, fmt.Errorf("%w: action %d", ErrBadVerdict, int(pv.GetAction()))
	}
	for _, h := range pv.GetAddHeaders() {
		v.AddHeaders = append(v.AddHeaders, HeaderField{Name: h.GetName(), Value: h.GetValue()})
	}
	for _, ar := range pv.GetAuthResults() {
		a := AuthResult{Method: ar.GetMethod(), Result: ar.GetResult(), Reason: ar.GetReason()}
		for _, p := range ar.GetProperties() {
			a.Properties = append(a.Properties, AuthProperty{Type: p.GetType(), Name: p.GetName(), Value: p.GetValue()})
		}
		v.AuthResults = append(v.AuthResults, a)
	}
	for _, s := range pv.GetSymbols() {
		v.Symbols = append(v.Symbols, Symbol{Name: s.GetName(), Score: s.GetScore(), Detail: s.GetDetail()})
	}
	return v, nil
}

var (
	_ Filter            = (*Remote)(nil)
	_ ConnectChecker    = (*Remote)(nil)
	_ MailChecker       = (*Remote)(nil)
	_ RcptChecker       = (*Remote)(nil)
	_ Learner           = (*Remote)(nil)
	_ plugin.GRPCPlugin = (*filterPlugin)(nil)
)

// PluginSetFor returns the plugin set that serves f, for running a filter
// in the host's own process (sdktest uses it).
func PluginSetFor(f Filter) plugin.PluginSet {
	return plugin.PluginSet{pluginName: &filterPlugin{impl: f}}
}
