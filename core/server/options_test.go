package server

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/smtpd"
)

// unset lists the fields of v (a struct, walked into nested structs) that
// hold their zero value, but for those named in skip.
func unset(v any, skip ...string) []string {
	var out []string
	var walk func(prefix string, rv reflect.Value)
	walk = func(prefix string, rv reflect.Value) {
		for i := 0; i < rv.NumField(); i++ {
			f, name := rv.Field(i), prefix+rv.Type().Field(i).Name
			switch {
			case slices.Contains(skip, name):
			case f.Kind() == reflect.Struct:
				walk(name+".", f)
			case f.IsZero():
				out = append(out, name)
			}
		}
	}
	walk("", reflect.ValueOf(v))
	return out
}

// Every option the listeners take from the config is filled from it: a
// field added to an Options struct and forgotten here would be left at
// its zero value, no limit, and fail this test.
func TestListenerOptionsFromConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Hostname = "mx.example.test"
	cfg.SMTP.MX.Listen = []string{"127.0.0.1:25"}
	cfg.SMTP.Submission.Listen = []string{"127.0.0.1:587"}
	cfg.SMTP.Submissions.Listen = []string{"127.0.0.1:465"}
	cfg.SMTP.RelayNetworks = []string{"127.0.0.2/32", "::1"}
	cfg.IMAP.Listen, cfg.IMAP.ListenTLS = []string{"127.0.0.1:143"}, []string{"127.0.0.1:993"}
	cfg.POP3.Listen, cfg.POP3.ListenTLS = []string{"127.0.0.1:110"}, []string{"127.0.0.1:995"}
	cfg.Web.Listen = []string{"127.0.0.1:443"}
	cfg.Auth.PlaintextLoopback = true
	deps := []string{"Store", "Queue", "Auth", "Local", "Pipelines", "TLS", "Relay", "Learn", "Logger"}

	so, err := smtpOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if u := unset(so, deps...); len(u) > 0 {
		t.Errorf("smtpd.Options left unset: %v", u)
	}
	if so.Limits.MaxMessageSize != 50<<20 || so.Limits.ReadTimeout != 5*time.Minute || so.Limits.MaxConnectionsPerIP != 20 {
		t.Errorf("smtpd limits %+v, not the config's defaults", so.Limits)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("::1/128")}; !slices.Equal(so.RelayNetworks, want) {
		t.Errorf("RelayNetworks = %v, want %v", so.RelayNetworks, want)
	}
	if got := so.Listen[smtpd.KindSubmissions]; !slices.Equal(got, cfg.SMTP.Submissions.Listen) {
		t.Errorf("submissions listen on %v", got)
	}

	io := imapOptions(cfg)
	// A View bounds no field's length (see imapOptions).
	if u := unset(io, append(deps, "View.FieldLength")...); len(u) > 0 {
		t.Errorf("imapd.Options left unset: %v", u)
	}
	if u := unset(pop3Options(cfg), deps...); len(u) > 0 {
		t.Errorf("pop3d.Options left unset: %v", u)
	}
	wo := webOptions(cfg)
	if u := unset(wo, deps...); len(u) > 0 {
		t.Errorf("webmail.Options left unset: %v", u)
	}
	if wo.IdleTimeout != 30*time.Minute || wo.MaxLifetime != 12*time.Hour {
		t.Errorf("webmail.Options %+v, not the config's defaults", wo)
	}

	cfg.SMTP.RelayNetworks = []string{"not a network"}
	if _, err := smtpOptions(cfg); err == nil {
		t.Error("smtpOptions took a bad relay network")
	}
}
