// Command rspamd is Sluice's rspamd filter: it has each message scanned by
// an rspamd server over rspamd's HTTP protocol and turns rspamd's answer
// into a verdict.
package main

import "github.com/sluice-mail/sluice/sdk"

func main() { sdk.Serve(newRspamd()) }
