// Command spam is Sluice's spam scoring filter plugin: cheap header and
// body heuristics and a Bayesian classifier that learns from Sluice's
// 'spam train' and from users moving mail into and out of Junk. It needs
// no outside service. It scores (sdk.Verdict.Score and Symbols) and never
// decides: the stage's actions map the score to Junk, quarantine or reject.
package main

import "github.com/sluice-mail/sluice/sdk"

func main() { sdk.Serve(newScorer()) }
