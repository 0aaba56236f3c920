package sdk

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type refEntry struct {
	Zone  string  `json:"zone" doc:"The zone."`
	Score float64 `json:"score" doc:"Added when listed."`
}

type refDNS struct {
	Servers []string `json:"dns_servers" doc:"DNS servers as host:port."`
}

type refConfig struct {
	refDNS
	Address string            `json:"address" default:"tcp://127.0.0.1:3310" doc:"Where the daemon listens."`
	Timeout Duration          `json:"timeout" default:"5s" doc:"Bounds one scan."`
	MaxSize *Size             `json:"max_size" default:"25MiB" doc:"The largest message sent."`
	Enforce bool              `json:"enforce" default:"true" doc:"Apply the policy."`
	Mode    string            `json:"mode" default:"\"5\"" doc:"A string that looks like a number."`
	Actions map[string]string `json:"actions" default:"{\"reject\": \"reject\"}" doc:"What each answer does."`
	Zones   []refEntry        `json:"zones" doc:"The lists."`
	More    []refEntry        `json:"more" doc:"More lists."`
	Limit   *int              `json:"limit" doc:"No limit when left out."`
}

type refFilter struct{ CheckFunc }

func (refFilter) ConfigSpec() any                  { return &refConfig{} }
func (refFilter) Describe() (name, version string) { return "ref", "1" }

func TestReference(t *testing.T) {
	want := `# The ref plugin: the keys of a stage's config mapping, with their defaults.
# DNS servers as host:port.
dns_servers: []
# Where the daemon listens.
address: "tcp://127.0.0.1:3310"
# Bounds one scan.
timeout: 5s
# The largest message sent.
max_size: 25MiB
# Apply the policy.
enforce: true
# A string that looks like a number.
mode: "5"
# What each answer does.
actions: {reject: reject}
# The lists.
zones: []
# Each entry of the list has these keys:
#  # The zone.
#  zone: ""
#  # Added when listed.
#  score: 0
# More lists.
more: []
# Each entry of the list has the same keys as in zones.
# No limit when left out.
limit: null
`
	if got := Reference("ref", refConfig{}); got != want {
		t.Errorf("Reference:\n%s\nwant:\n%s", got, want)
	}
	var out, errOut bytes.Buffer
	if code := printReference(&out, &errOut, refFilter{}); code != 0 || out.String() != want {
		t.Errorf("printReference: status %d, stdout\n%s", code, out.String())
	}
	out.Reset()
	if code := printReference(&out, &errOut, CheckFunc(nil)); code != 1 || out.Len() != 0 || !strings.Contains(errOut.String(), "does not document") {
		t.Errorf("printReference of an undocumented filter: status %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// TestDecodeDefaults: the default tags are what a stage gets for the keys
// it leaves out; a key it sets, even to zero, wins.
func TestDecodeDefaults(t *testing.T) {
	var c refConfig
	if err := (Config{Stage: "s", JSON: []byte(`{"timeout": "0s", "zones": [{"zone": "z"}], "actions": {"greylist": "tempfail"}}`)}).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Address != "tcp://127.0.0.1:3310" || c.Timeout != 0 || c.MaxSize == nil || *c.MaxSize != 25<<20 ||
		!c.Enforce || c.Mode != "5" || c.Actions["reject"] != "reject" || c.Actions["greylist"] != "tempfail" || c.Limit != nil {
		t.Errorf("decoded %+v", c)
	}
	if len(c.Zones) != 1 || c.Zones[0].Zone != "z" {
		t.Errorf("zones %+v", c.Zones)
	}
	var d refConfig
	if err := Defaults(&d); err != nil || d.Timeout.D() != 5*time.Second {
		t.Errorf("Defaults: %v, timeout %v", err, d.Timeout.D())
	}
	type bad struct {
		N int `json:"n" default:"many"`
	}
	if err := (Config{Stage: "s"}).Decode(&bad{}); err == nil || !strings.Contains(err.Error(), "default") {
		t.Errorf("a default that does not decode: %v", err)
	}
	type entries struct {
		E []struct {
			N int `json:"n" default:"1"`
		} `json:"e"`
	}
	defer func() {
		if recover() == nil {
			t.Error("Reference took a default tag inside a list")
		}
	}()
	Reference("bad", entries{})
}
