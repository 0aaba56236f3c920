// Package trace is the record of what a message's filter stages decided:
// one StageResult per stage and hook. The pipeline makes it, the queue
// keeps it with the message (its JSON is part of the queue's on-disk
// format: change it only compatibly), and 'sluice queue show' and
// 'sluice pipeline test' print it.
//
// It links no plugin protocol code, so that the queue and the delivery
// agents stay free of gRPC.
package trace

import "github.com/sluice-mail/sluice/sdk/verdict"

// StageResult is one stage's result at one hook: an entry of the trace.
type StageResult struct {
	Stage   string           `json:"stage"`
	Hook    verdict.Hook     `json:"hook"`
	Action  verdict.Action   `json:"action"`            // after the stage's actions and on_error
	Verdict string           `json:"verdict,omitempty"` // what the plugin said, when it differs
	Score   float64          `json:"score"`
	Symbols []verdict.Symbol `json:"symbols"`
	Reason  string           `json:"reason,omitempty"`
	Error   string           `json:"error,omitempty"` // the plugin failed; Action is its on_error
	Ms      float64          `json:"ms"`
	// WaitMs is how long the check waited for its turn (max_concurrency),
	// included in Ms.
	WaitMs float64 `json:"wait_ms,omitempty"`
}
