package remote

import (
	"reflect"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/dns"
)

// Settings left at zero get the config's documented defaults, not others
// of remote's own: the defaults are written in one place, the `default`
// tags of package config.
func TestZeroSettingsGetConfigDefaults(t *testing.T) {
	d, err := New(Options{DNS: dns.New([]string{"127.0.0.1:1"}, time.Second), Routes: []config.Route{{Domains: []string{"corp.test"}, Host: "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default().Remote
	if got := d.opts.Config; !reflect.DeepEqual(got, want) {
		t.Errorf("New with zero settings has\n%+v\nwant the config's defaults\n%+v", got, want)
	}
	if got := time.Duration(d.opts.Config.ConnectTimeout); got != 30*time.Second {
		t.Errorf("connect timeout %v, want the documented 30s", got)
	}
	if got := len(d.opts.Config.Retry); got != 7 {
		t.Errorf("retry schedule of %d steps, want the documented seven", got)
	}
	wantRoute := config.DefaultRoute()
	wantRoute.Domains, wantRoute.Host = []string{"corp.test"}, "127.0.0.1"
	if got := d.routes[0].cfg; !reflect.DeepEqual(got, wantRoute) {
		t.Errorf("route with zero settings\n%+v\nwant the config's defaults\n%+v", got, wantRoute)
	}
}

// The settings a config gives are kept.
func TestConfigSettingsKept(t *testing.T) {
	rc := config.Default().Remote
	rc.ConnectTimeout = config.Duration(7 * time.Second)
	rc.Retry = []config.Duration{config.Duration(time.Minute)}
	rc.Workers = 3
	d, err := New(Options{DNS: dns.New([]string{"127.0.0.1:1"}, time.Second), Config: rc})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.opts.Config, rc) {
		t.Errorf("New changed the config's settings:\n%+v\nwant\n%+v", d.opts.Config, rc)
	}
}
