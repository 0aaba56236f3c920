package main

import (
	"testing"

	"github.com/sluice-mail/sluice/sdk/proctest"
)

// TestMain fails the run if a process the tests started outlives them.
func TestMain(m *testing.M) { proctest.Main(m, proctest.Options{}) }
