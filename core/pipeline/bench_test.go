package pipeline

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/pluginhost"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// BenchmarkDataStage measures one data stage: an in-process filter (the
// pipeline's own cost) and the noop plugin process (what a plugin stage
// costs, gRPC included). 'make bench' measures the same over SMTP.
func BenchmarkDataStage(b *testing.B) {
	body := "Subject: x\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 160)
	f := filepath.Join(b.TempDir(), "m")
	os.WriteFile(f, []byte(body), 0o600)
	open := func() (io.ReadCloser, error) { return os.Open(f) }
	header := sdk.Header{{Name: "Subject", Value: "x"}}
	run := func(b *testing.B, filter sdk.Filter) {
		p := &Pipeline{Stages: []*Stage{{Name: "s", Filter: filter, Hooks: map[verdict.Hook]bool{verdict.HookData: true}, Timeout: 5 * time.Second, OnError: "tempfail"}}}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if o := p.Data(context.Background(), &sdk.Envelope{}, header, int64(len(body)), open); o.Action != verdict.Continue {
				b.Fatal(o)
			}
		}
	}
	b.Run("in-process", func(b *testing.B) {
		run(b, sdk.CheckFunc(func(_ context.Context, m *sdk.Message) (sdk.Verdict, error) {
			io.Copy(io.Discard, m.Data)
			return sdk.Accept(), nil
		}))
	})
	b.Run("plugin", func(b *testing.B) {
		bin := filepath.Join(b.TempDir(), "noop")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/sluice-mail/sluice/sdk/internal/testplugins/noop").CombinedOutput(); err != nil {
			b.Fatal(err, string(out))
		}
		plug, err := pluginhost.Start(context.Background(), pluginhost.Spec{Stage: "noop", Path: bin}, pluginhost.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		defer plug.Close()
		run(b, plug)
	})
}
