package sdk_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates sdk/internal/pluginpb from the
// .proto file and fails if the committed files differ: edit the .proto,
// then run 'make proto'. It needs protoc (Debian's protobuf-compiler) and
// the two Go generators, which 'make test' installs.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Fatal(err)
	}
	gobin := filepath.Join(string(bytes.TrimSpace(gopath)), "bin")
	tools := map[string]string{}
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-go-grpc"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			p = filepath.Join(gobin, tool)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s not found (run .ci/deps.sh, which 'make test' runs, to install it)", tool)
			}
		}
		tools[tool] = p
	}
	out := t.TempDir()
	cmd := exec.Command(tools["protoc"],
		"--plugin=protoc-gen-go="+tools["protoc-gen-go"], "--plugin=protoc-gen-go-grpc="+tools["protoc-gen-go-grpc"],
		"-I", "proto", "--go_out="+out, "--go_opt=module=github.com/sluice-mail/sluice",
		"--go-grpc_out="+out, "--go-grpc_opt=module=github.com/sluice-mail/sluice",
		"proto/sluice/plugin/v1/filter.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, f := range []string{"filter.pb.go", "filter_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, "sdk/internal/pluginpb", f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("internal/pluginpb", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("sdk/internal/pluginpb/%s is stale: run 'make proto'", f)
		}
	}
}
