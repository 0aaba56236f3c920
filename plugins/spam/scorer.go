package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sluice-mail/sluice/sdk"
)

// version is reported to Sluice's log by Describe.
const version = "1.0.0"

// dbFile is the Bayes database's name in the stage's state directory.
const dbFile = "bayes.db"

// Symbols that are not heuristics.
const (
	symUntrained = "BAYES_UNTRAINED"
)

// scorer is the filter. Check and Learn may run concurrently with each
// other; Configure excludes both (mu).
type scorer struct {
	mu         sync.RWMutex
	configured bool
	s          settings
	db         *bayesDB // nil when Bayes is off
}

func newScorer() *scorer { return &scorer{} }

// ConfigSpec implements sdk.ConfigDocumenter.
func (sc *scorer) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (sc *scorer) Describe() (string, string) { return "spam", version }

// Configure implements sdk.Filter. With Bayes on it opens (creating if
// needed) StateDir/bayes.db; a new state directory on reload opens the
// new database and closes the old one.
func (sc *scorer) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return fmt.Errorf("spam: %w", err)
	}
	s, err := c.settings()
	if err != nil {
		return err
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !s.bayes {
		if sc.db != nil {
			sc.db.Close()
			sc.db = nil
		}
		sc.s, sc.configured = s, true
		return nil
	}
	if cfg.StateDir == "" {
		return errors.New("spam: no state directory for the Bayes database (Sluice sets one per stage; or set bayes: false)")
	}
	path := filepath.Join(cfg.StateDir, dbFile)
	if sc.db == nil || sc.db.path != path {
		db, err := openBayes(path)
		if err != nil {
			return err
		}
		if sc.db != nil {
			sc.db.Close()
		}
		sc.db = db
	}
	sc.s, sc.configured = s, true
	return nil
}

// Check implements sdk.Filter. It always returns Continue, with the
// score and the symbols that make it up. An error means the message could
// not be read (ctx ended) or the database could not be.
func (sc *scorer) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	if !sc.configured {
		return sdk.Verdict{}, errors.New("spam: not configured")
	}
	a, err := analyze(ctx, msg, &sc.s)
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("spam: reading the message: %w", err)
	}
	syms := runHeuristics(a, &msg.Envelope, &sc.s)
	if sc.db != nil {
		r, err := sc.db.classify(tokenize(a, sc.s.maxTokens), sc.s.minLearned)
		if err != nil {
			return sdk.Verdict{}, err
		}
		if r.trained {
			i := bandFor(r.prob)
			syms = append(syms, sdk.Symbol{
				Name: bayesBands[i].name, Score: sc.s.bayesScores[i],
				Detail: fmt.Sprintf("%.4f (%d clues)", r.prob, r.clues),
			})
		} else {
			syms = append(syms, sdk.Symbol{
				Name:   symUntrained,
				Detail: fmt.Sprintf("learned %d spam and %d ham, scores from %d of each", r.nspam, r.nham, sc.s.minLearned),
			})
		}
	}
	var score float64
	for i := range syms {
		score += syms[i].Score
		// Details quote the message, which may hold any bytes; the
		// protocol carries only UTF-8.
		syms[i].Detail = strings.ToValidUTF8(syms[i].Detail, "\uFFFD")
	}
	return sdk.Verdict{Action: sdk.Continue, Score: math.Round(score*100) / 100, Symbols: syms}, nil
}

// Learn implements sdk.Learner: the message is learned as spam or ham,
// once; learning it again as the same class does nothing, as the other
// class moves it.
func (sc *scorer) Learn(ctx context.Context, msg *sdk.Message, spam bool) error {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	if !sc.configured {
		return errors.New("spam: not configured")
	}
	if sc.db == nil {
		return errors.New("spam: cannot learn: bayes is off in this stage's config")
	}
	a, err := analyze(ctx, msg, &sc.s)
	if err != nil {
		return fmt.Errorf("spam: reading the message: %w", err)
	}
	_, err = sc.db.learn(a.fingerprint[:], tokenize(a, sc.s.maxTokens), spam)
	return err
}

var (
	_ sdk.Filter    = (*scorer)(nil)
	_ sdk.Learner   = (*scorer)(nil)
	_ sdk.Describer = (*scorer)(nil)
)
