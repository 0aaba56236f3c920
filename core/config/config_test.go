package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk/verdict"
)

func parse(t *testing.T, yml string) (*Config, error) {
	t.Helper()
	return Parse("test.yaml", []byte(yml))
}

func TestDefaultsParse(t *testing.T) {
	c := Default()
	if c.SMTP.MaxRecipients != 100 || c.SMTP.MaxMessageSize != 50<<20 || c.SMTP.ReadTimeout.D() != 5*time.Minute {
		t.Fatalf("Default() = %+v, defaults not applied", c.SMTP)
	}
	if c.Store.RecipientDelimiter != "+" || c.TLS.MinVersion != "1.2" {
		t.Fatalf("Default() string defaults = %q, %q", c.Store.RecipientDelimiter, c.TLS.MinVersion)
	}
}

func TestEveryFieldDocumented(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(tp reflect.Type, path string) {
		for i := 0; i < tp.NumField(); i++ {
			f := tp.Field(i)
			if !f.IsExported() {
				continue
			}
			key := join(path, yamlName(f))
			if f.Tag.Get("doc") == "" {
				t.Errorf("config key %s has no doc tag", key)
			}
			if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalerType) {
				walk(f.Type, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

func TestEmptyFileIsDefaults(t *testing.T) {
	c, err := parse(t, "")
	if err != nil {
		t.Fatalf("Parse(empty) = %v", err)
	}
	if c.DataDir != "/var/lib/sluice" {
		t.Errorf("DataDir = %q", c.DataDir)
	}
}

func TestReferenceRoundTrip(t *testing.T) {
	got, err := Parse("reference.yaml", []byte(Reference()))
	if err != nil {
		t.Fatalf("Parse(Reference()) = %v", err)
	}
	want := Default()
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	got.file, got.lines, want.file, want.lines = "", nil, "", nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(Reference()) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseValues(t *testing.T) {
	c, err := parse(t, `
hostname: MX.Example.TEST
data_dir: ./data
domains: [Example.TEST, bücher.example]
smtp:
  mx:
    listen: ["127.0.0.1:2525", "[::1]:2525"]
  max_message_size: 10MB
  read_timeout: 90s
  max_recipients: 500
store:
  recipient_delimiter: "-"
  default_quota: 0
queue:
  retry_after: 2d
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.test" {
		t.Errorf("Hostname = %q", c.Hostname)
	}
	if want := []string{"example.test", "xn--bcher-kva.example"}; !reflect.DeepEqual(c.Domains, want) {
		t.Errorf("Domains = %q, want %q", c.Domains, want)
	}
	if c.SMTP.MaxMessageSize != 10_000_000 || c.SMTP.ReadTimeout.D() != 90*time.Second || c.SMTP.MaxRecipients != 500 {
		t.Errorf("SMTP = %+v", c.SMTP)
	}
	if c.Queue.RetryAfter.D() != 48*time.Hour {
		t.Errorf("RetryAfter = %v", c.Queue.RetryAfter)
	}
	if c.Store.RecipientDelimiter != "-" || c.Store.DefaultQuota != 0 {
		t.Errorf("Store = %+v", c.Store)
	}
	if c.SMTP.MaxHops != 50 {
		t.Errorf("unset key lost its default: MaxHops = %d", c.SMTP.MaxHops)
	}
}

// Each case is a config with one mistake and the FILE:LINE prefix and
// words its error must contain.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yml, want string
	}{
		{"unknown top-level key", "hostname: a.test\nbogus: 1\n", "test.yaml:2:1: unknown key \"bogus\""},
		{"unknown nested key with suggestion", "smtp:\n  max_recipient: 5\n", "test.yaml:2:3: smtp: unknown key \"max_recipient\" (did you mean \"max_recipients\"?)"},
		{"wrong type int", "smtp:\n  max_recipients: lots\n", "test.yaml:2:19: smtp.max_recipients: expected an integer, got \"lots\""},
		{"wrong type bool", "tls:\n  self_signed: maybe\n", "test.yaml:2:16: tls.self_signed: expected true or false"},
		{"wrong type list", "domains: example.test\n", "test.yaml:1:10: domains: expected a list"},
		{"wrong type mapping", "smtp: 25\n", "test.yaml:1:7: smtp: expected a mapping"},
		{"bad duration", "smtp:\n  read_timeout: 5 minutes\n", "test.yaml:2:17: smtp.read_timeout: invalid duration"},
		{"bad size", "smtp:\n  max_message_size: 10XB\n", "test.yaml:2:21: smtp.max_message_size: invalid size"},
		{"syntax error", "smtp:\n  mx: [\n", "test.yaml:2: YAML syntax"},
		{"duplicate key", "hostname: a.test\nhostname: b.test\n", "test.yaml:2:1: key \"hostname\" is set twice"},
		{"bad enum", "log:\n  format: xml\n", "test.yaml:2:3: log.format: \"xml\" is not one of text, json"},
		{"bad listen", "smtp:\n  mx:\n    listen: [\"localhost\"]\n", "test.yaml:3:14: smtp.mx.listen[0]: \"localhost\" is not host:port"},
		{"duplicate listen", "smtp:\n  mx:\n    listen: [\"127.0.0.1:25\"]\n  submission:\n    listen: [\"127.0.0.1:25\"]\ntls:\n  self_signed: true\n", "test.yaml:5:14: smtp.submission.listen[0]: 127.0.0.1:25 is also used by smtp.mx"},
		{"submission without tls", "smtp:\n  submission:\n    listen: [\"127.0.0.1:587\"]\n", "test.yaml:2:3: smtp.submission: needs TLS"},
		{"web without tls", "web:\n  listen: [\"127.0.0.1:8443\"]\n", "test.yaml:1:1: web: needs TLS"},
		{"web idle timeout zero", "web:\n  idle_timeout: 0s\n", "test.yaml:2:3: web.idle_timeout"},
		{"bad domain", "domains: [\"not a domain\"]\n", "test.yaml:1:11: domains[0]: \"not a domain\" is not a valid domain"},
		{"below minimum", "smtp:\n  max_line_length: 100\n", "test.yaml:2:3: smtp.max_line_length: 100 is below the minimum of 1024"},
		{"header size below minimum", "smtp:\n  max_header_size: 1KiB\n", "test.yaml:2:3: smtp.max_header_size: 1KiB is below the minimum of 64KiB"},
		{"MIME depth below minimum", "smtp:\n  max_mime_depth: 2\n", "test.yaml:2:3: smtp.max_mime_depth: 2 is below the minimum of 10"},
		{"bad delimiter", "store:\n  recipient_delimiter: \"@\"\n", "test.yaml:2:3: store.recipient_delimiter"},
		{"password length zero", "auth:\n  min_password_length: 0\n", "test.yaml:2:3: auth.min_password_length: 0 is below the minimum of 1"},
		{"password length too long", "auth:\n  min_password_length: 1025\n", "test.yaml:2:3: auth.min_password_length: 1025 is above the maximum of 1024"},
		{"half a certificate", "tls:\n  cert_file: a.pem\n", "test.yaml:1:1: tls: cert_file and key_file must be set together"},
		{"two documents", "hostname: a.test\n---\nhostname: b.test\n", "test.yaml:2: more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.yml)
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want %q", tt.yml, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q) error =\n%v\nwant it to contain\n%s", tt.yml, err, tt.want)
			}
		})
	}
}

func TestParseReportsAllErrors(t *testing.T) {
	_, err := parse(t, "bogus: 1\nsmtp:\n  max_hops: x\n  nope: 2\n")
	var es Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("Parse = %v, want 3 errors", err)
	}
	for i, line := range []int{1, 3, 4} {
		if es[i].Line != line {
			t.Errorf("error %d at line %d, want %d: %v", i, es[i].Line, line, es[i])
		}
	}
}

func TestSizeAndDuration(t *testing.T) {
	sizes := map[string]Size{"0": 0, "1024": 1024, "1KiB": 1024, "10 MiB": 10 << 20, "1GB": 1e9, "2KB": 2000, "7B": 7}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "10XB", "99999999999TiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %v, want error", in, got)
		}
	}
	durs := map[string]time.Duration{"0s": 0, "90s": 90 * time.Second, "1h30m": 90 * time.Minute, "5d": 120 * time.Hour}
	for in, want := range durs {
		if got, err := ParseDuration(in); err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5", "-1s", "1.5d", "xd"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want error", in, got)
		}
	}
	for _, d := range []time.Duration{30 * time.Second, 5 * time.Minute, 2 * time.Hour, 90 * time.Minute, 48 * time.Hour, 1500 * time.Millisecond} {
		s := Duration(d).String()
		if back, err := ParseDuration(s); err != nil || back.D() != d {
			t.Errorf("Duration(%v).String() = %q, which parses as %v, %v", d, s, back, err)
		}
	}
}

// FuzzParse checks that no input makes the loader panic, and that every
// error it returns names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(Reference()))
	f.Add([]byte("smtp:\n  mx:\n    listen: [\"127.0.0.1:25\"]\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("smtp: {max_recipients: !!binary aGVsbG8=}\n"))
	f.Add([]byte("domains: [[[]]]\n"))
	f.Add([]byte("\t\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("fuzz.yaml", data)
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

func TestPipelines(t *testing.T) {
	c, err := parse(t, `
pipelines:
  inbound:
    - plugin: clamav
      config: {address: "tcp://127.0.0.1:3310", max_size: 25MiB, nested: {list: [1, two]}}
    - plugin: /opt/filters/my-filter.bin
      hooks: [connect, data]
      timeout: 5s
      on_error: accept
      actions: {reject: quarantine, junk_at: 5.5}
      max_concurrency: 12
      queue_timeout: 90s
  outbound: []
`)
	if err != nil {
		t.Fatal(err)
	}
	in := c.Pipelines["inbound"]
	if len(in) != 2 {
		t.Fatalf("inbound = %+v", in)
	}
	if in[0].Name != "clamav" || in[0].Timeout.D() != 30*time.Second || in[0].OnError != "tempfail" ||
		in[0].MaxConcurrency != 0 || in[0].QueueTimeout.D() != 2*time.Minute {
		t.Errorf("stage 0 defaults = %+v", in[0])
	}
	if got := string(in[0].Config.JSON); got != `{"address":"tcp://127.0.0.1:3310","max_size":"25MiB","nested":{"list":[1,"two"]}}` {
		t.Errorf("stage 0 config JSON = %s", got)
	}
	if in[1].Name != "my-filter" || in[1].OnError != "accept" || in[1].Timeout.D() != 5*time.Second || in[1].Actions.Reject != "quarantine" || in[1].Actions.JunkAt != 5.5 ||
		in[1].MaxConcurrency != 12 || in[1].QueueTimeout.D() != 90*time.Second {
		t.Errorf("stage 1 = %+v", in[1])
	}
	bad := []struct{ yml, want string }{
		{"pipelines:\n  sideways: []\n", "unknown pipeline \"sideways\""},
		{"pipelines:\n  inbound:\n    - name: x\n", "pipelines.inbound[0]: plugin is required"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      hooks: [helo]\n", "pipelines.inbound[0].hooks[0]: \"helo\" is not one of"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n    - plugin: spam\n", "two stages are named \"spam\""},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      on_error: ignore\n", "on_error: \"ignore\" is not one of tempfail, accept, reject"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      sha256: abc\n", "sha256: must be 64 hex digits"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      config: [1, 2]\n", "expected a mapping of the plugin's settings"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      actions: {reject: explode}\n", "actions.reject: \"explode\" is not one of"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      timout: 5s\n", "unknown key \"timout\" (did you mean \"timeout\"?)"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      max_concurrency: -1\n", "pipelines.inbound[0].max_concurrency: must not be negative"},
		{"pipelines:\n  inbound:\n    - plugin: spam\n      max_concurrency: 4\n      queue_timeout: 0s\n", "pipelines.inbound[0].queue_timeout: must be greater than zero"},
	}
	for _, b := range bad {
		if _, err := parse(t, b.yml); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", b.yml, err, b.want)
		}
	}
}

func TestRoutesAndRemote(t *testing.T) {
	c, err := parse(t, `
domains: [example.test]
smtp:
  relay_networks: [10.0.0.0/8, 192.0.2.7]
remote:
  retry: [1m, 5m]
  tls: {secure.test: verify}
routes:
  - domains: [Corp.TEST, sub.corp.test]
    host: 10.1.2.3
    verify: list
    users: [alice@corp.test, "@sub.corp.test"]
  - domains: ["*"]
    host: smarthost.test
    port: 587
    tls: require
    auth: {username: u, password_file: /etc/sluice/pw}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes[0].Domains[0] != "corp.test" || c.Routes[0].Port != 25 || c.Routes[0].TLS != "opportunistic" || c.Routes[1].Verify != "none" {
		t.Errorf("routes = %+v", c.Routes)
	}
	if len(c.Remote.Retry) != 2 || c.Remote.Retry[1].D() != 5*time.Minute || c.Remote.Port != 25 {
		t.Errorf("remote = %+v", c.Remote)
	}
	bad := []struct{ yml, want string }{
		{"routes:\n  - host: x.test\n", "a route needs at least one domain"},
		{"routes:\n  - domains: [a.test]\n", "a route needs a host"},
		{"domains: [a.test]\nroutes:\n  - domains: [a.test]\n    host: x.test\n", "a.test is a local domain"},
		{"routes:\n  - domains: [a.test]\n    host: x.test\n  - domains: [a.test]\n    host: y.test\n", "already routed by routes[0]"},
		{"routes:\n  - domains: [a.test]\n    host: x.test\n    verify: list\n", "verify: list needs the list of users"},
		{"routes:\n  - domains: [a.test]\n    host: x.test\n    tls: none\n    auth: {username: u, password_file: f}\n", "AUTH is only sent over TLS"},
		{"smtp:\n  relay_networks: [everyone]\n", "is not an address range"},
		{"remote:\n  tls: {a.test: maybe}\n", "\"maybe\" is not one of opportunistic, require, verify"},
		{"remote:\n  retry: []\n", "needs at least one wait"},
		{"dns:\n  servers: [\"8.8.8.8\"]\n", "is not host:port"},
	}
	for _, b := range bad {
		if _, err := parse(t, b.yml); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", b.yml, err, b.want)
		}
	}
}

func TestRunAsValidation(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		ok   bool
	}{
		{"run_as: sluice\n", true},
		{"run_as: \"1234\"\n", true},
		{"run_as: root\n", false},
		{"run_as: \"0\"\n", false},
		{"run_as: \" sluice\"\n", false},
	} {
		_, err := parse(t, tc.yaml)
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q) = %v, want ok %v", tc.yaml, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "test.yaml:1:1: run_as: ") {
			t.Errorf("Parse(%q) = %v, want it located at run_as", tc.yaml, err)
		}
	}
}

// TestPluginUserValidation: plugin_user is an unprivileged user, and
// needs run_as.
func TestPluginUserValidation(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want string // "" means valid
	}{
		{"run_as: sluice\nplugin_user: sluice-plugin\n", ""},
		{"run_as: sluice\nplugin_user: sluice\n", ""},
		{"run_as: sluice\nplugin_user: \"1234\"\n", ""},
		{"run_as: sluice\nplugin_user: root\n", "test.yaml:2:1: plugin_user: \"root\": must be an unprivileged user"},
		{"run_as: sluice\nplugin_user: \"0\"\n", "test.yaml:2:1: plugin_user: \"0\": must be an unprivileged user"},
		{"plugin_user: sluice-plugin\n", "test.yaml:1:1: plugin_user: needs run_as"},
	} {
		_, err := parse(t, tc.yaml)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Parse(%q) = %v, want it valid", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.yaml, err, tc.want)
		}
	}
}

// TestWarnSubmissionWithoutSenderPolicy: a config whose users submit mail
// but whose outbound pipeline does not check their sender addresses lets
// any of them send as anyone; Warnings says so, at the listener.
func TestWarnSubmissionWithoutSenderPolicy(t *testing.T) {
	const listeners = "tls: {self_signed: true}\nsmtp:\n  mx: {listen: [\"127.0.0.1:2525\"]}\n  submission: {listen: [\"127.0.0.1:2587\"]}\n"
	for _, tc := range []struct {
		name, yaml string
		warn       string // "" for none
	}{
		{"no pipelines", listeners, "test.yaml:4:3: smtp.submission: there is no senderpolicy stage"},
		{"senderpolicy inbound only", listeners + "pipelines:\n  inbound: [{plugin: senderpolicy}]\n  outbound: [{plugin: spam}]\n", "smtp.submission: there is no senderpolicy stage"},
		{"submissions only", "tls: {self_signed: true}\nsmtp:\n  submissions: {listen: [\"127.0.0.1:2465\"]}\n", "test.yaml:3:3: smtp.submissions: there is no senderpolicy stage"},
		{"senderpolicy outbound", listeners + "pipelines:\n  outbound: [{plugin: spam}, {plugin: senderpolicy}]\n", ""},
		{"senderpolicy by path", listeners + "pipelines:\n  outbound: [{plugin: /usr/lib/sluice/senderpolicy}]\n", ""},
		{"no submission listeners", "smtp:\n  mx: {listen: [\"127.0.0.1:2525\"]}\n", ""},
	} {
		c, err := parse(t, tc.yaml)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := c.Warnings()
		switch {
		case tc.warn == "" && len(got) > 0:
			t.Errorf("%s: Warnings() = %v, want none", tc.name, got)
		case tc.warn != "" && (len(got) != 1 || !strings.Contains(got.Error(), tc.warn)):
			t.Errorf("%s: Warnings() = %v, want one containing %q", tc.name, got, tc.warn)
		}
	}
}

// A stage's actions and on_error, as the pipeline applies them; the
// values Validate accepts are named once (sdk/verdict, OnErrors).
func TestStageActions(t *testing.T) {
	c, err := parse(t, "pipelines:\n  inbound:\n    - plugin: spam\n      on_error: reject\n      actions: {reject: continue, quarantine: junk}\n    - plugin: clamav\n")
	if err != nil {
		t.Fatal(err)
	}
	st, plain := c.Pipelines["inbound"][0], c.Pipelines["inbound"][1]
	for in, want := range map[verdict.Action]verdict.Action{verdict.Reject: verdict.Continue, verdict.Quarantine: verdict.Junk, verdict.Tempfail: verdict.Tempfail, verdict.Continue: verdict.Continue} {
		if got := st.Actions.Map(in); got != want {
			t.Errorf("mapped %v = %v, want %v", in, got, want)
		}
	}
	if plain.Actions.Map(verdict.Reject) != verdict.Reject || plain.Actions.Map(verdict.Quarantine) != verdict.Quarantine {
		t.Error("a stage without actions changes its verdicts")
	}
	if st.OnError.Action() != verdict.Reject || plain.OnError.Action() != verdict.Tempfail || OnErrorAccept.Action() != verdict.Continue || OnError("").Action() != verdict.Tempfail {
		t.Error("on_error maps to the wrong actions")
	}
	for yml, want := range map[string]string{
		"actions: {reject: discard}":      `"discard" is not one of reject, tempfail, quarantine, junk, continue`,
		"actions: {quarantine: reject}":   "",
		"actions: {quarantine: tempfail}": `"tempfail" is not one of quarantine, junk, reject, continue`,
		"hooks: [learn]":                  `"learn" is not one of connect, mail, rcpt, data`,
	} {
		_, err := parse(t, "pipelines:\n  inbound:\n    - plugin: spam\n      "+yml+"\n")
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", yml, err, want)
		}
	}
}
