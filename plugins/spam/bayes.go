package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-mail/sluice/plugins/internal/statelock"
)

// The classifier is Gary Robinson's, as SpamBayes uses it:
//
//   - Each token's spam probability is p = (s/S) / (s/S + h/H), where s and
//     h are the spam and ham messages it appeared in and S and H the
//     messages learned of each class, so the classes' sizes do not matter.
//   - p is shrunk towards 0.5 for rare tokens:
//     f = (strength*0.5 + n*p) / (strength + n), with n = s + h.
//   - Every token with |f - 0.5| >= minStrength is taken (SpamBayes takes
//     the 150 strongest; taking all did better on the SpamAssassin
//     corpus, see cmd/spam-eval), and they are combined with Fisher's
//     method: H = C(-2 sum ln f), S = C(-2 sum ln(1-f)), with C the
//     chi-square survival function with 2n degrees of freedom; the
//     message's probability is (1 + H - S) / 2.
//
// That makes most messages land near 0 or 1, and messages with strong
// clues both ways near 0.5 ("unsure"), which the BAYES_50 band scores
// mildly.
const (
	unknownStrength = 0.45
	minStrength     = 0.1
	// maxReceived is how many Received fields (from the top) give
	// tokens.
	maxReceived = 10
)

// band maps a range of the Bayes probability to a symbol and its default
// score.
type band struct {
	name  string
	lo    float64 // the band holds lo <= p < the next band's lo
	score float64
}

// bayesBands are the Bayes symbols. The scores are the ones a trained
// classifier is trusted with, against a Junk threshold of 5: from
// BAYES_80 up the classifier alone reaches it, BAYES_60 needs 1.5 points
// of heuristics, BAYES_50 3.5; confident ham takes points off, to absorb
// heuristics that fired on ham. They were chosen on a held-out part of
// the training set of the SpamAssassin corpus (spam-eval -tune), never on
// its test set.
var bayesBands = [...]band{
	{"BAYES_00", 0, -3.0},
	{"BAYES_05", 0.01, -2.0},
	{"BAYES_20", 0.05, -1.0},
	{"BAYES_40", 0.20, 0},
	{"BAYES_50", 0.40, 1.5},
	{"BAYES_60", 0.60, 3.5},
	{"BAYES_80", 0.80, 5.0},
	{"BAYES_95", 0.95, 5.5},
	{"BAYES_99", 0.99, 6.5},
	{"BAYES_999", 0.999, 7.5},
}

func bandIndex(name string) int {
	for i, b := range bayesBands {
		if b.name == name {
			return i
		}
	}
	return -1
}

// bandFor returns the index of the band that holds p.
func bandFor(p float64) int {
	i := 0
	for j, b := range bayesBands {
		if p >= b.lo {
			i = j
		}
	}
	return i
}

// Bucket and key names of the database.
var (
	bucketTokens  = []byte("tokens")  // fnv64(token) -> spam uint32, ham uint32
	bucketLearned = []byte("learned") // fingerprint -> 's' or 'h'
	bucketMeta    = []byte("meta")    // keyNSpam, keyNHam -> uint64; keyVersion
	keyNSpam      = []byte("nspam")
	keyNHam       = []byte("nham")
	keyVersion    = []byte("version")
)

// dbVersion is the layout of the database; a database of another version
// is refused rather than misread.
const dbVersion = 1

// bayesDB is the token database, a bbolt file. bbolt lets checks read
// while one learn writes; learns are serialised by bbolt.
type bayesDB struct {
	db   *bbolt.DB
	path string
}

func openBayes(path string) (*bayesDB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("spam: bayes database: %w", err)
	}
	db, err := openLocked(path)
	if err != nil {
		return nil, fmt.Errorf("spam: bayes database %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketTokens, bucketLearned, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v != nil {
			if len(v) != 8 || binary.BigEndian.Uint64(v) != dbVersion {
				return fmt.Errorf("database version %x, this filter reads version %d", v, dbVersion)
			}
			return nil
		}
		return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, dbVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("spam: bayes database %s: %w", path, err)
	}
	return &bayesDB{db: db, path: path}, nil
}

// lockWait bounds the wait for another process's lock on the database
// (bbolt's flock): a spam plugin of a configuration being reloaded lets go
// soon.
var lockWait = 5 * time.Second

// openLocked opens the bbolt file at path. When another process holds it,
// statelock looks who: an orphaned spam plugin, left by a Sluice that
// crashed, is killed and the file opened; any other holder gets lockWait
// to let go, and is named in the error if it does not.
func openLocked(path string) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, berrors.ErrTimeout) {
		return db, err
	}
	pid, killed, reason, cerr := statelock.Clear(path, lockWait)
	if cerr != nil {
		return nil, cerr
	}
	if killed {
		log.Printf("[WARN] spam: %s was locked by process %d, an orphaned spam plugin whose host is gone: killed it", path, pid)
	}
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockWait})
	if errors.Is(err, berrors.ErrTimeout) && !killed {
		if pid == 0 {
			pid, _ = statelock.Holder(path)
		}
		if pid != 0 {
			if reason == "" {
				_, reason = statelock.Orphaned(pid)
			}
			return nil, fmt.Errorf("locked by process %d, which is not an orphaned spam plugin (%s): %w", pid, reason, err)
		}
	}
	return db, err
}

func (b *bayesDB) Close() error { return b.db.Close() }

func tokenKey(t string) []byte {
	h := fnv.New64a()
	h.Write([]byte(t))
	return h.Sum(nil)
}

func getU64(bk *bbolt.Bucket, k []byte) uint64 {
	if v := bk.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// clue is one token's evidence.
type clue struct {
	f float64
}

// result is the outcome of a classification.
type result struct {
	prob        float64
	clues       int
	nspam, nham uint64
	trained     bool
}

// classify computes the spam probability of a message's tokens. Below
// minLearned messages of either class it returns trained false.
func (b *bayesDB) classify(tokens []string, minLearned int) (result, error) {
	var r result
	err := b.db.View(func(tx *bbolt.Tx) error {
		meta, tb := tx.Bucket(bucketMeta), tx.Bucket(bucketTokens)
		if meta == nil || tb == nil {
			return errors.New("buckets missing")
		}
		r.nspam, r.nham = getU64(meta, keyNSpam), getU64(meta, keyNHam)
		if r.nspam < uint64(minLearned) || r.nham < uint64(minLearned) {
			return nil
		}
		r.trained = true
		keys := make([][]byte, len(tokens))
		for i, t := range tokens {
			keys[i] = tokenKey(t)
		}
		slices.SortFunc(keys, func(x, y []byte) int { return strings.Compare(string(x), string(y)) })
		clues := make([]clue, 0, len(keys))
		for _, k := range keys {
			v := tb.Get(k)
			if len(v) != 8 {
				continue
			}
			s, h := float64(binary.BigEndian.Uint32(v[:4])), float64(binary.BigEndian.Uint32(v[4:]))
			sr, hr := min(s/float64(r.nspam), 1), min(h/float64(r.nham), 1)
			if sr+hr == 0 {
				continue
			}
			p := sr / (sr + hr)
			n := s + h
			f := (unknownStrength*0.5 + n*p) / (unknownStrength + n)
			if math.Abs(f-0.5) >= minStrength {
				clues = append(clues, clue{f: f})
			}
		}
		slices.SortFunc(clues, func(x, y clue) int {
			dx, dy := math.Abs(x.f-0.5), math.Abs(y.f-0.5)
			switch {
			case dx > dy:
				return -1
			case dx < dy:
				return 1
			}
			return 0
		})
		r.clues = len(clues)
		r.prob = fisher(clues)
		return nil
	})
	if err != nil {
		return result{}, fmt.Errorf("spam: bayes database %s: %w", b.path, err)
	}
	return r, nil
}

// fisher combines the clues (see the comment at the top).
func fisher(clues []clue) float64 {
	if len(clues) == 0 {
		return 0.5
	}
	var sumLnF, sumLn1F float64
	for _, c := range clues {
		sumLnF += math.Log(c.f)
		sumLn1F += math.Log1p(-c.f)
	}
	n := len(clues)
	hamminess := chi2Q(-2*sumLnF, 2*n)   // near 1 when the f are small
	spamminess := chi2Q(-2*sumLn1F, 2*n) // near 1 when the f are large
	return (1 + hamminess - spamminess) / 2
}

// chi2Q is the probability that a chi-square variable with v (even)
// degrees of freedom exceeds x2, summed in log space so that large x2 do
// not underflow: Q = exp(-m) sum_{i<v/2} m^i / i!, m = x2/2.
func chi2Q(x2 float64, v int) float64 {
	m := x2 / 2
	if m <= 0 {
		return 1
	}
	logM := math.Log(m)
	maxLog := math.Inf(-1)
	logs := make([]float64, v/2)
	for i := range logs {
		lg, _ := math.Lgamma(float64(i + 1))
		logs[i] = -m + float64(i)*logM - lg
		maxLog = math.Max(maxLog, logs[i])
	}
	var sum float64
	for _, l := range logs {
		sum += math.Exp(l - maxLog)
	}
	return math.Min(math.Exp(maxLog+math.Log(sum)), 1)
}

// learnResult says what a learn did.
type learnResult int

const (
	learnedNew   learnResult = iota // first time
	learnedMoved                    // was learned as the other class
	learnedSame                     // already learned as this class: nothing done
)

// learn adds a message's tokens to the class spam or ham, once per
// fingerprint: learning it again as the same class does nothing, learning
// it as the other class moves it.
func (b *bayesDB) learn(fp []byte, tokens []string, spam bool) (learnResult, error) {
	class, other := byte('h'), byte('s')
	if spam {
		class, other = 's', 'h'
	}
	var res learnResult
	// Batch: concurrent learns share a transaction and its fsync. fn may
	// run again after a failed batch, so it sets res from scratch.
	err := b.db.Batch(func(tx *bbolt.Tx) error {
		res = learnedNew
		meta, tb, lb := tx.Bucket(bucketMeta), tx.Bucket(bucketTokens), tx.Bucket(bucketLearned)
		if meta == nil || tb == nil || lb == nil {
			return errors.New("buckets missing")
		}
		old := lb.Get(fp)
		if len(old) == 1 && old[0] == class {
			res = learnedSame
			return nil
		}
		moving := len(old) == 1 && old[0] == other
		if moving {
			res = learnedMoved
		}
		// In key order: neighbouring keys share B+tree pages.
		keys := make([][]byte, 0, len(tokens))
		for _, t := range tokens {
			keys = append(keys, tokenKey(t))
		}
		slices.SortFunc(keys, func(x, y []byte) int { return strings.Compare(string(x), string(y)) })
		keys = slices.CompactFunc(keys, func(x, y []byte) bool { return string(x) == string(y) })
		for _, k := range keys {
			var s, h uint32
			if v := tb.Get(k); len(v) == 8 {
				s, h = binary.BigEndian.Uint32(v[:4]), binary.BigEndian.Uint32(v[4:])
			}
			inc := func(c *uint32) {
				if *c < math.MaxUint32 {
					*c++
				}
			}
			dec := func(c *uint32) {
				if *c > 0 {
					*c--
				}
			}
			if spam {
				inc(&s)
				if moving {
					dec(&h)
				}
			} else {
				inc(&h)
				if moving {
					dec(&s)
				}
			}
			v := make([]byte, 8)
			binary.BigEndian.PutUint32(v[:4], s)
			binary.BigEndian.PutUint32(v[4:], h)
			if err := tb.Put(k, v); err != nil {
				return err
			}
		}
		nk, ok := keyNHam, keyNSpam
		if spam {
			nk, ok = keyNSpam, keyNHam
		}
		if err := meta.Put(nk, binary.BigEndian.AppendUint64(nil, getU64(meta, nk)+1)); err != nil {
			return err
		}
		if moving {
			if n := getU64(meta, ok); n > 0 {
				if err := meta.Put(ok, binary.BigEndian.AppendUint64(nil, n-1)); err != nil {
					return err
				}
			}
		}
		return lb.Put(fp, []byte{class})
	})
	if err != nil {
		return 0, fmt.Errorf("spam: bayes database %s: %w", b.path, err)
	}
	return res, nil
}

// tokenize turns an analysis into the classifier's tokens: distinct, at
// most max of them, in a stable order. Words of the body are lowercased
// and kept at 3 to 20 characters (longer ones become a "skip" token for
// their first character and length); header fields, URLs, HTML tags and
// the MIME structure give prefixed tokens, so that "free" in the Subject
// and in the body count apart.
func tokenize(a *analysis, max int) []string {
	t := &tokens{seen: map[string]bool{}, max: max}

	h := a.header
	t.words("subject:", a.subject)
	tokenizeFrom(t, a.from)
	if rt := h.Get("Reply-To"); rt != "" {
		t.add("reply-to:" + addrDomain(rt))
	}
	t.add(fmt.Sprintf("to:count:%d", bucketCount(strings.Count(h.Get("To"), "@"))))
	t.add(fmt.Sprintf("cc:count:%d", bucketCount(strings.Count(h.Get("Cc"), "@"))))
	if id := h.Get("Message-ID"); id != "" {
		_, right, _ := strings.Cut(strings.Trim(id, "<> "), "@")
		t.add("message-id:" + strings.ToLower(right))
		t.add("message-id:shape:" + shape(id, 40))
	} else {
		t.add("message-id:none")
	}
	for _, name := range []string{"X-Mailer", "User-Agent"} {
		if v := h.Get(name); v != "" {
			f := strings.Fields(strings.ToLower(v))
			t.add(strings.ToLower(name) + ":" + strings.Join(f[:min(len(f), 3)], " "))
		}
	}
	if d := h.Get("Date"); d != "" {
		t.add("date:shape:" + shape(d, 40))
	}
	for _, f := range h {
		name := strings.ToLower(f.Name)
		if strings.HasPrefix(name, "x-spam") || strings.HasPrefix(name, "x-sluice") {
			continue // our own verdicts, or another filter's
		}
		t.add("header:" + name)
	}
	for i, r := range h.Values("Received") {
		if i >= maxReceived {
			break
		}
		tokenizeReceived(t, r)
	}
	for _, p := range a.parts {
		t.add("part:" + p)
	}
	for _, tag := range a.tags {
		t.add("html:" + tag)
	}
	for _, at := range a.attrs {
		t.add("html:" + at)
	}
	for _, at := range a.attach {
		if i := strings.LastIndexByte(at.name, '.'); i >= 0 {
			t.add("attach:ext:" + strings.ToLower(at.name[i+1:]))
		}
		t.add("attach:type:" + at.mediaType)
	}
	for _, l := range a.links {
		t.url(l.href)
	}
	t.body(a.plain.String())
	t.body(a.htmlText.String())
	return t.list
}

// shape reduces a value to its form: runs of digits become "9", of
// letters "a", other characters stay. Forged Date and Message-ID fields
// have tell-tale forms.
func shape(v string, max int) string {
	var b strings.Builder
	last := rune(0)
	for _, r := range v {
		c := r
		switch {
		case unicode.IsDigit(r):
			c = '9'
		case unicode.IsLetter(r):
			c = 'a'
		}
		if c == last && (c == '9' || c == 'a') {
			continue
		}
		last = c
		b.WriteRune(c)
		if b.Len() >= max {
			break
		}
	}
	return b.String()
}

type tokens struct {
	seen map[string]bool
	list []string
	max  int
}

func (t *tokens) add(s string) {
	if len(t.list) >= t.max || t.seen[s] {
		return
	}
	t.seen[s] = true
	t.list = append(t.list, s)
}

func (t *tokens) full() bool { return len(t.list) >= t.max }

// body adds the tokens of free text: words, and pairs of adjacent words.
func (t *tokens) body(text string) {
	prev := ""
	for _, w := range strings.Fields(text) {
		if t.full() {
			return
		}
		lw := strings.ToLower(w)
		if strings.Contains(lw, "://") || strings.HasPrefix(lw, "www.") {
			t.url(strings.Trim(w, `"'()[]{}<>,;`))
			prev = ""
			continue
		}
		tok := t.word("", w)
		if tok != "" && prev != "" && !strings.HasPrefix(tok, "skip:") && !strings.HasPrefix(prev, "skip:") {
			t.add("bi:" + prev + " " + tok)
		}
		prev = tok
	}
}

// words adds each word of s with a prefix.
func (t *tokens) words(prefix, s string) {
	for _, w := range strings.Fields(s) {
		t.word(prefix, w)
	}
}

const wordTrim = `.,;:?"'()[]{}<>*-_=#|/\` + "`"

// word adds the token of one word and returns it without the prefix
// ("" when the word gives none).
func (t *tokens) word(prefix, w string) string {
	w = strings.Trim(w, wordTrim)
	if w == "" {
		return ""
	}
	if at := strings.IndexByte(w, '@'); at > 0 && at < len(w)-1 {
		tok := "email:" + strings.ToLower(strings.Trim(w[at+1:], wordTrim))
		t.add(prefix + tok)
		return tok
	}
	n := utf8.RuneCountInString(w)
	switch {
	case n < 3:
		return ""
	case n > 20:
		r, _ := utf8.DecodeRuneInString(w)
		tok := fmt.Sprintf("skip:%c %d", unicode.ToLower(r), n/10*10)
		t.add(prefix + tok)
		return tok
	}
	tok := strings.ToLower(w)
	t.add(prefix + tok)
	return tok
}

// url adds a URL's scheme, host (and its parent domains) and path words.
func (t *tokens) url(u string) {
	host := urlHost(u)
	if host == "" {
		return
	}
	lu := strings.ToLower(u)
	switch {
	case strings.HasPrefix(lu, "https:"):
		t.add("proto:https")
	case strings.HasPrefix(lu, "http:"):
		t.add("proto:http")
	}
	if isNumericHost(host) {
		t.add("url:ip")
	} else {
		labels := strings.Split(host, ".")
		for i := 0; i < len(labels)-1 && i < 5; i++ {
			t.add("url:" + strings.Join(labels[i:], "."))
		}
	}
	if i := strings.Index(lu, host); i >= 0 {
		rest := lu[i+len(host):]
		for _, p := range strings.FieldsFunc(rest, func(r rune) bool { return strings.ContainsRune("/?&=.#_-:%+~", r) }) {
			if l := len(p); l >= 3 && l <= 20 {
				t.add("url:path:" + p)
			}
		}
	}
}

func tokenizeFrom(t *tokens, from string) {
	name, domain := from, ""
	if i := strings.LastIndexByte(from, '<'); i >= 0 {
		name, domain = from[:i], addrDomain(from[i:])
	} else if strings.Contains(from, "@") {
		name, domain = "", addrDomain(from)
	}
	t.add("from:domain:" + domain)
	name = strings.Trim(strings.TrimSpace(name), `"'`)
	if name == "" {
		t.add("from:noname")
	}
	t.words("from:", name)
}

// tokenizeReceived takes host names (as their registered domains) and IP
// prefixes from a Received field.
func tokenizeReceived(t *tokens, r string) {
	if i := strings.LastIndexByte(r, ';'); i >= 0 {
		r = r[:i]
	}
	for _, f := range strings.FieldsFunc(r, func(c rune) bool { return strings.ContainsRune(" \t()[]<>;,=", c) }) {
		f = strings.ToLower(strings.Trim(f, "."))
		if ip, err := netip.ParseAddr(f); err == nil && ip.Is4() {
			b := ip.As4()
			t.add(fmt.Sprintf("received:ip:%d.%d", b[0], b[1]))
			t.add(fmt.Sprintf("received:ip:%d.%d.%d", b[0], b[1], b[2]))
			continue
		}
		if looksLikeDomain(f) {
			t.add("received:" + regDomain(f))
		}
	}
}

func addrDomain(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return ""
	}
	return strings.Trim(s[at+1:], "<>\"' ,;")
}

// bucketCount maps a count to 0, 1, 2, 4, 8, ...
func bucketCount(n int) int {
	b := 0
	for v := 1; v <= n; v *= 2 {
		b = v
	}
	return b
}
