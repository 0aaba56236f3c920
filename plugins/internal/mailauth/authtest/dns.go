package authtest

import (
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// dnsStartWait is how long one dnstest.Start may take before StartDNS
// gives up on it; starting takes milliseconds.
const dnsStartWait = 3 * time.Second

// StartDNS is dnstest.Start made safe from a hang: dnstest.Start listens
// on TCP at the port the kernel gave its UDP socket, ignores the error
// when that TCP port is taken (by any socket on the machine), and then
// waits forever for the TCP server to start. StartDNS gives each try a
// few seconds and tries again on another port. A stuck try's goroutine
// and UDP server stay until the test binary exits.
func StartDNS(t testing.TB, zone string) *dnstest.Server {
	t.Helper()
	for range 5 {
		started := make(chan *dnstest.Server, 1)
		go func() { started <- dnstest.Start(t, zone) }()
		select {
		case s := <-started:
			return s
		case <-time.After(dnsStartWait):
			t.Logf("authtest: dnstest.Start did not return in %v (its TCP port was taken?); trying again", dnsStartWait)
		}
	}
	t.Fatal("authtest: could not start the test DNS server")
	return nil
}
