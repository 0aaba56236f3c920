// Package resolver builds the DNS resolver the filter plugins use: the
// system's, or one that asks only the configured servers (host:port), which
// is how tests point plugins at a DNS server they start themselves.
package resolver

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Config is the DNS part of a plugin's configuration.
type Config struct {
	// Servers are DNS servers as host:port; empty means the system
	// resolver.
	Servers []string `json:"dns_servers" doc:"DNS servers as host:port, asked in turn; empty means the system's resolver."`
}

// New returns a resolver that asks servers in turn (a failed server is
// skipped for the next query), or the system resolver when servers is
// empty. Every lookup should carry a deadline in its context.
func New(servers []string) *net.Resolver {
	if len(servers) == 0 {
		return net.DefaultResolver
	}
	var next atomic.Uint32
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			var last error
			start := next.Add(1)
			for i := range servers {
				addr := servers[(int(start)+i)%len(servers)]
				c, err := d.DialContext(ctx, network, addr)
				if err == nil {
					return c, nil
				}
				// Keep the error as it is (not joined with the others),
				// so that a timeout still says it is one.
				last = err
			}
			return nil, last
		},
	}
}

// IsNotFound reports whether err says the name has no records of the type
// asked (NXDOMAIN or an empty answer), as opposed to a failure to find out.
func IsNotFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// DefaultTimeout bounds one DNS lookup when the configuration sets none.
const DefaultTimeout = 5 * time.Second
