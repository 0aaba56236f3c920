package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluice-mail/sluice/sdk/proctest"
)

// shippedPlugins builds every plugin under plugins/ into a directory of
// its own (not the one the other tests run plugins from while this builds)
// and returns it.
var shippedPlugins = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(filepath.Dir(sluiceBin), "shipped") + string(filepath.Separator)
	if out, err := exec.Command("go", "build", "-o", dir, "github.com/sluice-mail/sluice/plugins/...").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the plugins: %v\n%s", err, out)
	}
	return dir, nil
})

// A crash of the server does not become an outage: after SIGKILL with
// every shipped plugin running (two spam stages with their databases
// among them), no plugin of the old server is left, and the server
// started again at once starts.
func TestCrashLeavesNoPlugins(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to see the plugin processes")
	}
	dir, err := shippedPlugins()
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "")
	in.cli("", "dkim", "keygen", "example.test", "s1")
	key := filepath.Join(in.dir, "data", "dkim", "example.test.s1.key")
	base, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	pipelines := fmt.Sprintf(`plugins:
  dir: %q
pipelines:
  inbound:
    - plugin: dnsbl
      on_error: accept
      config: {zones: [{zone: bl.example.test, reject: true}]}
    - {plugin: spf, on_error: accept}
    - {plugin: dkim, on_error: accept}
    - {plugin: dmarc, on_error: accept}
    - plugin: clamav
      on_error: accept
      config: {address: "tcp://127.0.0.1:1"}
    - plugin: rspamd
      on_error: accept
      config: {url: "http://127.0.0.1:1"}
    - plugin: example
      config: {pattern: "never matches", action: reject}
    - {plugin: spam, on_error: accept}
  outbound:
    - {plugin: senderpolicy, on_error: accept}
    - plugin: ratelimit
      config: {messages_per_hour: 200, recipients_per_hour: 1000}
    - plugin: dkim-sign
      config: {keys: [{domain: example.test, selector: s1, key_file: %q}]}
    - {plugin: spam, on_error: accept}
`, dir, key)
	if err := os.WriteFile(in.config, append(base, pipelines...), 0o600); err != nil {
		t.Fatal(err)
	}
	const stages = 12
	in.start()
	for _, p := range []string{"inbound-spam", "outbound-spam"} {
		if _, err := os.Stat(filepath.Join(in.dir, "data", "plugins", p, "bayes.db")); err != nil {
			t.Fatalf("the spam stage's database: %v", err)
		}
	}
	server := in.cmd.Process.Pid
	old := proctest.Children(server)
	if len(old) != stages {
		t.Fatalf("the server runs %d plugin processes, want %d: %v", len(old), stages, old)
	}

	in.kill()
	in.start() // within seconds: kill waits only for the server itself

	for pid, exe := range old {
		if state, ppid := proctest.Stat(pid); state != "" && state != "Z" && ppid != in.cmd.Process.Pid {
			t.Errorf("plugin %d (%s) of the killed server still runs (parent %d)", pid, exe, ppid)
		}
	}
	if n := len(proctest.Children(in.cmd.Process.Pid)); n != stages {
		t.Errorf("the restarted server runs %d plugin processes, want %d", n, stages)
	}
	in.stop()
}
