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
// stage in Sluice's YAML). Every field's zero value means its default.
type config struct {
	// Bayes turns the Bayesian classifier on or off. Default true. Off,
	// the filter needs no state directory and scores with heuristics
	// only, and Learn fails.
	Bayes *bool `json:"bayes"`
	// MinLearned is how many spam and how many ham messages the
	// classifier must have learned (each) before it scores; below that
	// only heuristics count (symbol BAYES_UNTRAINED). Default 200.
	MinLearned *int `json:"min_learned"`
	// BayesScores overrides the score of BAYES_xx symbols, by name (see
	// bayesBands). Default: the table in bayes.go.
	BayesScores map[string]float64 `json:"bayes_scores"`
	// Scores overrides the score of heuristic symbols, by name. A score
	// of 0 turns a heuristic off. Default: the table in heuristics.go.
	Scores map[string]float64 `json:"scores"`
	// Disable lists heuristic symbols that are not checked at all.
	// Default none.
	Disable []string `json:"disable"`
	// MaxBytes is how much of a message is examined (header and body);
	// the rest is not read. Default 10MiB. At least 64KiB.
	MaxBytes sdk.Size `json:"max_bytes"`
	// MaxPartBytes is how much of each part's decoded body is examined.
	// Default 256KiB. At least 4KiB, at most max_bytes.
	MaxPartBytes sdk.Size `json:"max_part_bytes"`
	// MaxDepth caps MIME nesting; deeper multiparts are not opened.
	// Default 16, at most 100.
	MaxDepth int `json:"max_depth"`
	// MaxParts caps the MIME parts examined. Default 256, at most 10000.
	MaxParts int `json:"max_parts"`
	// MaxTokens caps the distinct tokens taken from one message for the
	// classifier. Default 5000.
	MaxTokens int `json:"max_tokens"`
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
	s, err := config{}.settings()
	if err != nil {
		panic(err) // the defaults are valid; a test checks it
	}
	return s
}

// settings validates c and fills in the defaults.
func (c config) settings() (settings, error) {
	s := settings{
		bayes: true, minLearned: 200,
		maxBytes: 10 << 20, maxPartBytes: 256 << 10, maxDepth: 16, maxParts: 256, maxTokens: 5000,
		scores: map[string]float64{},
	}
	var errs []error
	if c.Bayes != nil {
		s.bayes = *c.Bayes
	}
	if c.MinLearned != nil {
		if *c.MinLearned < 1 || *c.MinLearned > 1e9 {
			errs = append(errs, fmt.Errorf("min_learned %d: want 1 to 1000000000", *c.MinLearned))
		}
		s.minLearned = *c.MinLearned
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
	if c.MaxBytes != 0 {
		if c.MaxBytes < 64<<10 || c.MaxBytes > 1<<30 {
			errs = append(errs, fmt.Errorf("max_bytes %d: want 64KiB to 1GiB", c.MaxBytes))
		}
		s.maxBytes = int64(c.MaxBytes)
	}
	if c.MaxPartBytes != 0 {
		if c.MaxPartBytes < 4<<10 || int64(c.MaxPartBytes) > s.maxBytes {
			errs = append(errs, fmt.Errorf("max_part_bytes %d: want 4KiB to max_bytes (%d)", c.MaxPartBytes, s.maxBytes))
		}
		s.maxPartBytes = int(min(c.MaxPartBytes, 1<<30))
	}
	if c.MaxDepth != 0 {
		if c.MaxDepth < 1 || c.MaxDepth > 100 {
			errs = append(errs, fmt.Errorf("max_depth %d: want 1 to 100", c.MaxDepth))
		}
		s.maxDepth = c.MaxDepth
	}
	if c.MaxParts != 0 {
		if c.MaxParts < 1 || c.MaxParts > 10000 {
			errs = append(errs, fmt.Errorf("max_parts %d: want 1 to 10000", c.MaxParts))
		}
		s.maxParts = c.MaxParts
	}
	if c.MaxTokens != 0 {
		if c.MaxTokens < 100 || c.MaxTokens > 100000 {
			errs = append(errs, fmt.Errorf("max_tokens %d: want 100 to 100000", c.MaxTokens))
		}
		s.maxTokens = c.MaxTokens
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
