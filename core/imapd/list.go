package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/store"
)

const delim = '/'

// maxListWork bounds the steps of pattern matching in one LIST: about a
// tenth of a second. A user with a hundred mailboxes listing with ten
// patterns of twenty bytes needs a thousandth of it.
const maxListWork = 50_000_000

// List implements imapserver.Session: LIST (with LIST-EXTENDED selection
// and return options, LIST-STATUS) and LSUB.
//
// Special-use attributes (RFC 6154) are always returned, as most clients
// look for them in a plain LIST. A name that only exists as the parent of
// another ("a" of "a/b") is listed, \Noselect, when a pattern matches it.
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter (RFC 9051 section 6.3.9).
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim, Mailbox: ""})
	}
	if len(patterns) > maxListPatterns || len(ref) > maxPatternLen {
		return no(imap.ResponseCodeLimit, "Too many or too long LIST patterns")
	}
	full := make([]string, len(patterns))
	for i, p := range patterns {
		if len(p) > maxPatternLen {
			return no(imap.ResponseCodeLimit, "Too many or too long LIST patterns")
		}
		full[i] = canonicalPattern(ref, p)
	}
	boxes, err := s.srv.opts.Store.Mailboxes(s.user.ID)
	if err != nil {
		return s.storeErr("list", err)
	}
	exists := map[string]*store.Mailbox{}
	hasChildren := map[string]bool{}
	var implied []string
	for i := range boxes {
		exists[boxes[i].Name] = &boxes[i]
	}
	for _, mb := range boxes {
		for p := parent(mb.Name); p != "" && !hasChildren[p]; p = parent(p) {
			// (Once a parent is known, so are its own parents.)
			if exists[p] == nil {
				implied = append(implied, p)
			}
			hasChildren[p] = true
		}
	}
	// matchPattern costs len(name)*len(pattern): bound the whole LIST.
	var names, patternBytes int
	for _, mb := range boxes {
		names += len(mb.Name) + 1
	}
	for _, name := range implied {
		names += len(name) + 1
	}
	for _, p := range full {
		patternBytes += len(p) + 1
	}
	if names*patternBytes > maxListWork {
		return no(imap.ResponseCodeLimit, "LIST patterns too complex")
	}
	matches := func(name string) bool {
		for _, p := range full {
			if matchPattern(name, p) {
				return true
			}
		}
		return false
	}
	for _, mb := range boxes {
		if !matches(mb.Name) {
			continue
		}
		if options.SelectSubscribed && !mb.Subscribed {
			continue
		}
		if options.SelectSpecialUse && mb.SpecialUse == "" {
			continue
		}
		data := &imap.ListData{Delim: delim, Mailbox: mb.Name}
		if hasChildren[mb.Name] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if mb.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(mb.SpecialUse))
		}
		if (options.ReturnSubscribed || options.SelectSubscribed) && mb.Subscribed {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil {
			if data.Status, err = s.status(mb, options.ReturnStatus); err != nil {
				return err
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	if options.SelectSubscribed || options.SelectSpecialUse {
		return nil
	}
	for _, name := range implied {
		if !matchesPercentLevel(name, full) {
			continue
		}
		data := &imap.ListData{Delim: delim, Mailbox: name, Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect, imap.MailboxAttrHasChildren}}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// matchesPercentLevel reports whether an implied parent is to be listed:
// a pattern matches it and stops there with % (RFC 3501 section 6.3.8),
// or names it without wildcards.
func matchesPercentLevel(name string, patterns []string) bool {
	for _, p := range patterns {
		if matchPattern(name, p) && !strings.HasSuffix(p, "*") {
			return true
		}
	}
	return false
}

func parent(name string) string {
	i := strings.LastIndex(name, string(delim))
	if i < 0 {
		return ""
	}
	return name[:i]
}

// canonicalPattern joins a LIST reference and pattern into one pattern
// over full names, as imapserver.MatchList does, and spells a leading
// INBOX the way the store does (INBOX is case-insensitive).
func canonicalPattern(ref, pattern string) string {
	d := string(delim)
	if strings.HasPrefix(pattern, d) {
		ref, pattern = "", pattern[1:]
	}
	if ref != "" && !strings.HasSuffix(ref, d) {
		ref += d
	}
	p := ref + pattern
	first, rest, found := strings.Cut(p, d)
	if strings.EqualFold(first, "INBOX") {
		p = "INBOX"
		if found {
			p += d + rest
		}
	}
	return p
}

// matchPattern matches a mailbox name against a LIST pattern: * matches
// anything, % anything but the delimiter. It takes time proportional to
// len(name)*len(pattern) whatever the pattern (imapserver.MatchList
// backtracks, which a pattern of many wildcards makes exponential).
func matchPattern(name, pattern string) bool {
	n := len(name)
	prev := make([]bool, n+1)
	cur := make([]bool, n+1)
	prev[0] = true
	for j := 0; j < len(pattern); j++ {
		c := pattern[j]
		switch c {
		case '*':
			acc := false
			for i := 0; i <= n; i++ {
				acc = acc || prev[i]
				cur[i] = acc
			}
		case '%':
			for i := 0; i <= n; i++ {
				cur[i] = prev[i] || (i > 0 && cur[i-1] && name[i-1] != delim)
			}
		default:
			cur[0] = false
			for i := 1; i <= n; i++ {
				cur[i] = prev[i-1] && name[i-1] == c
			}
		}
		prev, cur = cur, prev
	}
	return prev[n]
}
