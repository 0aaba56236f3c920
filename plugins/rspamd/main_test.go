package main

import (
	"os"
	"testing"

	"github.com/sluice-mail/sluice/sdk/proctest"
)

// TestMain fails the run if a process the tests started outlives them.
func TestMain(m *testing.M) { os.Exit(proctest.Run(m)) }
