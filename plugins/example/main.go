// Command example is the template for Sluice filter plugins: it refuses
// (or quarantines) messages whose Subject matches a regular expression.
// Copy this folder to start a plugin of your own; the section "Writing a
// filter plugin" of the top-level README.md walks through it.
package main

import "github.com/sluice-mail/sluice/sdk"

// main stays this small: build the filter and hand it to sdk.Serve, which
// speaks the plugin protocol with Sluice and never returns.
func main() { sdk.Serve(newSubjectFilter()) }
