// Command dnsbl is Sluice's DNS blocklist filter: it looks the client's IP
// address up in DNSBL zones, and the HELO name and the sender's domain in
// RHSBL zones.
package main

import "github.com/sluice-mail/sluice/sdk"

func main() { sdk.Serve(newDNSBL()) }
