package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// TestRemoteConfig checks that the remote section's Sluice config parses
// with the settings meant, and leaves remote delivery at its defaults.
func TestRemoteConfig(t *testing.T) {
	yaml := sluiceConfigYAML(t.TempDir(), "127.0.0.1:2525", remoteSluiceOptions("127.0.0.1:5353", 2600))
	c, err := config.Parse("bench.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("%v:\n%s", err, yaml)
	}
	if len(c.SMTP.RelayNetworks) != 1 || c.SMTP.RelayNetworks[0] != "127.0.0.0/8" {
		t.Errorf("smtp.relay_networks = %v", c.SMTP.RelayNetworks)
	}
	if len(c.DNS.Servers) != 1 || c.DNS.Servers[0] != "127.0.0.1:5353" {
		t.Errorf("dns.servers = %v", c.DNS.Servers)
	}
	if c.Remote.Port != 2600 || !c.Remote.AllowPrivate {
		t.Errorf("remote.port = %d, allow_private = %v", c.Remote.Port, c.Remote.AllowPrivate)
	}
	d := config.Default()
	if c.Remote.Workers != d.Remote.Workers || c.Remote.PerDestination != d.Remote.PerDestination || c.Remote.MessagesPerConn != d.Remote.MessagesPerConn {
		t.Errorf("remote limits %d/%d/%d, want the defaults %d/%d/%d", c.Remote.Workers, c.Remote.PerDestination, c.Remote.MessagesPerConn, d.Remote.Workers, d.Remote.PerDestination, d.Remote.MessagesPerConn)
	}
	if c.Log.Level != "info" {
		t.Errorf("log.level = %q", c.Log.Level)
	}
	// The other sections' config is unchanged.
	c, err = config.Parse("bench.yaml", []byte(sluiceConfigYAML(t.TempDir(), "127.0.0.1:2525", sluiceOptions{})))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "warn" || len(c.SMTP.RelayNetworks) != 0 {
		t.Errorf("default config: log.level %q, relay_networks %v", c.Log.Level, c.SMTP.RelayNetworks)
	}
}

// TestRemoteZone checks that each domain's MX resolves to its sink.
func TestRemoteZone(t *testing.T) {
	srv := dnstest.Start(t, remoteZone())
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k := range remoteDomains {
		mx, err := r.LookupMX(ctx, remoteDomain(k)+".")
		if err != nil || len(mx) != 1 {
			t.Fatalf("MX %s = %v, %v", remoteDomain(k), mx, err)
		}
		ips, err := r.LookupHost(ctx, mx[0].Host)
		if err != nil || len(ips) != 1 || ips[0] != sinkIP(k) {
			t.Errorf("%s (MX of %s) = %v, %v, want %s", mx[0].Host, remoteDomain(k), ips, err, sinkIP(k))
		}
	}
}

func TestParseSinkCount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"sess=1 quit=0 mesg=0\r", 0},
		{"sess=1 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r", 1},
		{"mesg=49\rsess=49 quit=49 mesg=50\rsess=50 quit=50 mesg=50\r", 50},
		// A record still being written does not count.
		{"sess=9 quit=9 mesg=99\rsess=9 quit=9 mesg=10", 99},
		{"ss=9 quit=9 mesg=120\r", 120},
	} {
		if got := parseSinkCount([]byte(tc.in)); got != tc.want {
			t.Errorf("parseSinkCount(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestPostfixTransportMap(t *testing.T) {
	got := postfixTransportMap(2600)
	want := "d0.remote.test=smtp:[127.0.0.10]:2600, d1.remote.test=smtp:[127.0.0.11]:2600, d2.remote.test=smtp:[127.0.0.12]:2600, d3.remote.test=smtp:[127.0.0.13]:2600, d4.remote.test=smtp:[127.0.0.14]:2600, d5.remote.test=smtp:[127.0.0.15]:2600, d6.remote.test=smtp:[127.0.0.16]:2600, d7.remote.test=smtp:[127.0.0.17]:2600, d8.remote.test=smtp:[127.0.0.18]:2600, d9.remote.test=smtp:[127.0.0.19]:2600"
	if got != want {
		t.Errorf("postfixTransportMap(2600) = %q, want %q", got, want)
	}
}
