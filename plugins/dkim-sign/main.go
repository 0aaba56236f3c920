package main

import "github.com/sluice-mail/sluice/sdk"

func main() { sdk.Serve(newFilter()) }
