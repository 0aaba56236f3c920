package main

import (
	"fmt"
	"sort"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// benchZone is what the bench's DNS server (dnstest.Serve, on a loopback
// port over UDP and TCP, in this process) serves to the filter plugins
// of the full pipeline: the sender's domain publishes SPF that passes for
// 127.0.0.1 and a DMARC record with p=none (so SPF and DMARC are
// evaluated in full, and nothing can be refused or quarantined by them).
// The dnsbl zones (bl.bench.test for the client IP, dbl.bench.test for
// the sender's domain) list nothing: every other name gets NXDOMAIN.
// smtp-source's messages carry no DKIM signature, so dkim looks nothing
// up.
const benchZone = `
example.test.        300 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.example.test. 300 IN TXT "v=DMARC1; p=none"
bl.bench.test.       300 IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300
dbl.bench.test.      300 IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300
`

// takeQueries returns the queries s got since the last takeQueries, as
// "TYPE name ×n", most frequent first, and their total.
func takeQueries(s *dnstest.Server) ([]string, int) {
	by := map[string]int{}
	for _, q := range s.TakeQueries() {
		by[q]++
	}
	type kv struct {
		k string
		n int
	}
	var all []kv
	total := 0
	for k, n := range by {
		all = append(all, kv{k, n})
		total += n
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	var out []string
	for _, e := range all {
		out = append(out, fmt.Sprintf("%s ×%d", e.k, e.n))
	}
	return out, total
}
