// Command faulty is a plugin that misbehaves on request, for testing how
// Sluice survives broken plugins. It speaks the plugin protocol directly
// (not through the SDK), so that it can also send what the SDK would never
// let a Go filter send, such as a verdict with an unknown action.
//
// What a data check does depends on the message's Subject:
//
//	crash     the process exits in the middle of the check
//	hang      the check never answers, whatever the deadline
//	garbage   the verdict has an action that does not exist
//	error     the check fails with an error
//	reject    a well-formed reject verdict
//	sleep:D   wait D (a Go duration), then continue, honouring the deadline
//	anything else: continue, with an X-Faulty header
//
// Configure fails when the settings say {"refuse": true}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
	"github.com/sluice-mail/sluice/sdk/internal/wire"
)

type server struct {
	pluginpb.UnimplementedFilterServer
}

func (server) Describe(context.Context, *pluginpb.DescribeRequest) (*pluginpb.DescribeResponse, error) {
	return &pluginpb.DescribeResponse{Name: "faulty", Version: "1", Hooks: wire.HooksToPB([]sdk.Hook{sdk.HookConnect, sdk.HookData})}, nil
}

func (server) Configure(_ context.Context, req *pluginpb.ConfigureRequest) (*pluginpb.ConfigureResponse, error) {
	var cfg struct {
		Refuse bool `json:"refuse"`
	}
	json.Unmarshal(req.GetConfigJson(), &cfg)
	if cfg.Refuse {
		return nil, errors.New("refused as asked")
	}
	return &pluginpb.ConfigureResponse{}, nil
}

func (server) CheckConnect(_ context.Context, req *pluginpb.ConnectRequest) (*pluginpb.Verdict, error) {
	if req.GetEnvelope().GetHelo() == "crash" {
		os.Exit(3)
	}
	return &pluginpb.Verdict{}, nil
}

func (server) CheckData(stream pluginpb.Filter_CheckDataServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	subject := ""
	for _, h := range first.GetHeader() {
		if strings.EqualFold(h.GetName(), "Subject") {
			subject = strings.TrimSpace(h.GetValue())
		}
	}
	// Read the rest, as a real filter would.
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	switch {
	case subject == "crash":
		os.Exit(2)
	case subject == "hang":
		select {}
	case subject == "garbage":
		return stream.SendAndClose(&pluginpb.Verdict{Action: 99})
	case subject == "error":
		return errors.New("failing as asked")
	case subject == "reject":
		return stream.SendAndClose(&pluginpb.Verdict{Action: pluginpb.Action_ACTION_REJECT, Code: 550, EnhancedCode: "5.7.1", Text: "Refused", Reason: "subject reject"})
	case strings.HasPrefix(subject, "sleep:"):
		d, _ := time.ParseDuration(strings.TrimPrefix(subject, "sleep:"))
		select {
		case <-time.After(d):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return stream.SendAndClose(&pluginpb.Verdict{AddHeaders: []*pluginpb.HeaderField{{Name: "X-Faulty", Value: "seen"}}, Score: 1, Symbols: []*pluginpb.Symbol{{Name: "FAULTY_SEEN", Score: 1}}})
}

type grpcPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterFilterServer(s, server{})
	return nil
}

func (grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("not a host")
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		Plugins:         plugin.PluginSet{wire.PluginName: grpcPlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
