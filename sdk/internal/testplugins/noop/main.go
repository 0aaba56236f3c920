// Command noop is a plugin that reads every message to the end and has no
// objection: the benchmark measures what one plugin stage costs with it.
package main

import (
	"context"
	"io"

	"github.com/sluice-mail/sluice/sdk"
)

type noop struct{}

func (noop) Configure(context.Context, sdk.Config) error { return nil }

func (noop) Check(_ context.Context, m *sdk.Message) (sdk.Verdict, error) {
	if _, err := io.Copy(io.Discard, m.Data); err != nil {
		return sdk.Verdict{}, err
	}
	return sdk.Accept(), nil
}

func (noop) Describe() (string, string) { return "noop", "1" }

func main() { sdk.Serve(noop{}) }
