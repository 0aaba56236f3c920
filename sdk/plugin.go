package sdk

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
	"github.com/sluice-mail/sluice/sdk/internal/wire"
)

// ProtocolVersion is the version of the plugin protocol this SDK speaks
// (sdk/proto/sluice/plugin/v1).
const ProtocolVersion = wire.ProtocolVersion

// HostPIDEnv is the environment variable in which a host (Sluice's
// core/pluginhost) passes its process ID to the plugins it starts. A plugin
// whose parent is no longer that process has lost its host: Serve exits,
// and a process holding a plugin's state file can be told from one that
// should not (plugins/internal/statelock).
const HostPIDEnv = "SLUICE_HOST_PID"

// init hands sdk/host the gRPC server below, so that it can serve a
// filter in the host's own process (sdktest) while plugin authors see
// only Serve.
func init() {
	wire.RegisterFilter = func(s *grpc.Server, f any) { pluginpb.RegisterFilterServer(s, &grpcServer{impl: f.(Filter)}) }
}

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
	if os.Getenv(wire.Handshake.MagicCookieKey) != wire.Handshake.MagicCookieValue {
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
		HandshakeConfig: wire.Handshake,
		Plugins:         wire.Set(&wire.Plugin{Register: func(s *grpc.Server) { wire.RegisterFilter(s, f) }}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(wire.MaxGRPCMessage), grpc.MaxSendMsgSize(wire.MaxGRPCMessage))
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
	return &pluginpb.DescribeResponse{Name: name, Version: version, Hooks: wire.HooksToPB(Hooks(s.impl))}, nil
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
	action, ok := wire.ActionToPB(v.Action)
	if !ok {
		return nil, status.Errorf(codes.Internal, "filter returned an unknown action %d", int(v.Action))
	}
	u := wire.ValidUTF8
	pv := &pluginpb.Verdict{
		Action: action, Code: int32(v.Code), EnhancedCode: u(v.EnhancedCode), Text: u(v.Text),
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
