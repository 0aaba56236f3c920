package main

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sluice-mail/sluice/sdk"
)

// config is the stage's configuration (the "config" mapping of a spam
// stage in Sluice's YAML). The tags are its documentation and defaults
// (docs/plugins.md); sdk.Config.Decode applies the defaults.
type config struct {
	Bayes        bool               `json:"bayes" default:"true" doc:"The Bayesian classifier. Off, the filter needs no state directory and scores with heuristics only, and learning fails."`
	MinLearned   int                `json:"min_learned" default:"200" doc:"How many spam and how many ham messages the classifier must have learned (each) before it scores; below that only heuristics count (symbol BAYES_UNTRAINED). 1 to 1000000000."`
	BayesScores  map[string]float64 `json:"bayes_scores" doc:"Overrides the score of BAYES_xx symbols, by name (the table in plugins/spam/bayes.go). -100 to 100."`
	Scores       map[string]float64 `json:"scores" doc:"Overrides the score of heuristic symbols, by name (the table in plugins/spam/heuristics.go). A score of 0 turns a heuristic off. -100 to 100."`
	Disable      []string           `json:"disable" doc:"Heuristic symbols that are not checked at all."`
	MaxBytes     sdk.Size           `json:"max_bytes" default:"10MiB" doc:"How much of a message is examined (header and body); the rest is not read. 64KiB to 1GiB."`
	MaxPartBytes sdk.Size           `json:"max_part_bytes" default:"256KiB" doc:"How much of each part's decoded body is examined. At least 4KiB; more than max_bytes counts as max_bytes."`
	MaxDepth     int                `json:"max_depth" default:"16" doc:"Caps MIME nesting; deeper multiparts are not opened. 1 to 100."`
	MaxParts     int                `json:"max_parts" default:"256" doc:"Caps the MIME parts examined. 1 to 10000."`
	MaxTokens    int                `json:"max_tokens" default:"5000" doc:"Caps the distinct tokens taken from one message for the classifier. 100 to 100000."`
}

// settings is a validated config with its defaults filled in.
type settings struct {
	bayes        bool
	minLearned   int
	bayesScores  [len(bayesBands)]float64
	scores       map[string]float64 // heuristic name -> score; absent when disabled
	maxBytes     int64
	maxPartBytes int
	maxDepth     int
	maxParts     int
	maxTokens    int
}

func defaultSettings() settings {
	var c config
	if err := sdk.Defaults(&c); err != nil {
		panic(err)
	}
	s, err := c.settings()
	if err != nil {
		panic(err) // the defaults are valid; a test checks it
	}
	return s
}

// settings validates c and fills in the defaults.
func (c config) settings() (settings, error) {
	s := settings{
		bayes: c.Bayes, minLearned: c.MinLearned,
		maxBytes: int64(c.MaxBytes), maxDepth: c.MaxDepth, maxParts: c.MaxParts, maxTokens: c.MaxTokens,
		scores: map[string]float64{},
	}
	var errs []error
	if c.MinLearned < 1 || c.MinLearned > 1e9 {
		errs = append(errs, fmt.Errorf("min_learned %d: want 1 to 1000000000", c.MinLearned))
	}
	for i, b := range bayesBands {
		s.bayesScores[i] = b.score
	}
	for _, name := range sortedKeys(c.BayesScores) {
		v := c.BayesScores[name]
		i := bandIndex(name)
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("bayes_scores: unknown symbol %q (known: %s)", name, bandNames()))
		case math.IsNaN(v) || math.Abs(v) > 100:
			errs = append(errs, fmt.Errorf("bayes_scores: %s: score %v out of range -100 to 100", name, v))
		default:
			s.bayesScores[i] = v
		}
	}
	for _, h := range heuristics {
		s.scores[h.name] = h.score
	}
	for _, name := range sortedKeys(c.Scores) {
		v := c.Scores[name]
		if _, ok := s.scores[name]; !ok {
			errs = append(errs, fmt.Errorf("scores: unknown symbol %q", name))
			continue
		}
		if math.IsNaN(v) || math.Abs(v) > 100 {
			errs = append(errs, fmt.Errorf("scores: %s: score %v out of range -100 to 100", name, v))
			continue
		}
		s.scores[name] = v
	}
	for _, name := range c.Disable {
		if _, ok := s.scores[name]; !ok {
			errs = append(errs, fmt.Errorf("disable: unknown symbol %q", name))
			continue
		}
		delete(s.scores, name)
	}
	for name, v := range s.scores {
		if v == 0 {
			delete(s.scores, name)
		}
	}
	if c.MaxBytes < 64<<10 || c.MaxBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("max_bytes %d: want 64KiB to 1GiB", c.MaxBytes))
	}
	if c.MaxPartBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("max_part_bytes %d: want at least 4KiB", c.MaxPartBytes))
	}
	s.maxPartBytes = int(min(int64(c.MaxPartBytes), s.maxBytes, 1<<30))
	if c.MaxDepth < 1 || c.MaxDepth > 100 {
		errs = append(errs, fmt.Errorf("max_depth %d: want 1 to 100", c.MaxDepth))
	}
	if c.MaxParts < 1 || c.MaxParts > 10000 {
		errs = append(errs, fmt.Errorf("max_parts %d: want 1 to 10000", c.MaxParts))
	}
	if c.MaxTokens < 100 || c.MaxTokens > 100000 {
		errs = append(errs, fmt.Errorf("max_tokens %d: want 100 to 100000", c.MaxTokens))
	}
	if err := errors.Join(errs...); err != nil {
		return settings{}, fmt.Errorf("spam: config: %w", err)
	}
	return s, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func bandNames() string {
	names := make([]string, len(bayesBands))
	for i, b := range bayesBands {
		names[i] = b.name
	}
	return strings.Join(names, ", ")
}
