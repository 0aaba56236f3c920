//go:build !linux

package pluginhost

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
)

// LauncherArg is the argument that makes the sluice program a plugin
// launcher; there is none outside Linux.
const LauncherArg = "__sluice-plugin-launcher"

// LauncherConfig is what a launcher may do (Linux only).
type LauncherConfig struct {
	Plugins    []AllowedPlugin
	Credential syscall.Credential
	StateDirs  string
	SocketGID  int
}

// AllowedPlugin is a program the launcher may run.
type AllowedPlugin struct {
	Path   string
	SHA256 string
}

// Launcher runs plugins as a user of their own; Linux only.
type Launcher struct{}

// StartLauncher fails outside Linux.
func StartLauncher(LauncherConfig, *slog.Logger) (*Launcher, error) {
	return nil, errors.New("pluginhost: a separate plugin user needs Linux")
}

// RunLauncher fails outside Linux.
func RunLauncher() int {
	fmt.Fprintln(os.Stderr, "sluice plugin launcher: Linux only")
	return 2
}

// Close does nothing.
func (l *Launcher) Close() {}

func (l *Launcher) runnerFunc(Spec, []string) func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
	return func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
		return nil, errors.New("pluginhost: a separate plugin user needs Linux")
	}
}
