// Command clamav is Sluice's virus-scanning filter plugin: it streams each
// message to clamd (ClamAV's daemon) with the INSTREAM command and rejects
// the messages clamd finds a virus in. See clamav.go for its configuration.
package main

import "github.com/sluice-mail/sluice/sdk"

func main() { sdk.Serve(newScanner()) }
