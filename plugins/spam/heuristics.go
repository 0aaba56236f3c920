package main

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/sluice-mail/sluice/sdk"
)

// heuristic is one cheap rule. The scores are modest on purpose: a rule
// alone should not push ham over the Junk threshold; the classifier does
// most of the work, and a stage's config can change any score.
type heuristic struct {
	name  string
	score float64
	desc  string
}

var heuristics = []heuristic{
	{"MISSING_FROM", 1.5, "no From field"},
	{"MISSING_DATE", 1.0, "no Date field"},
	{"MISSING_MESSAGE_ID", 0.5, "no Message-ID field"},
	{"MISSING_SUBJECT", 0.5, "no Subject field"},
	{"MISSING_TO", 0.5, "neither To nor Cc"},
	{"FROM_INVALID", 1.0, "From is not an address"},
	{"FROM_DISPLAY_SPOOF", 2.0, "From's display name holds an address of another domain"},
	{"DATE_INVALID", 1.0, "Date cannot be parsed (RFC 5322 section 3.3)"},
	{"DATE_IN_FUTURE", 1.5, "Date more than 12 hours after the message was received"},
	{"DATE_IN_PAST", 1.0, "Date more than 4 days before the message was received"},
	{"MSGID_INVALID", 1.0, "Message-ID is not <left@right> (RFC 5322 section 3.6.4)"},
	{"SUBJ_ALL_CAPS", 1.0, "Subject in capitals"},
	{"SUBJ_EXCESS_PUNCT", 0.5, "Subject with !!!, $$$ or the like"},
	{"TO_UNDISCLOSED", 0.3, "To undisclosed recipients"},
	{"HTML_ONLY", 0.3, "HTML without a text alternative"},
	{"HTML_LITTLE_TEXT", 1.5, "HTML with images or links and little text"},
	{"HTML_HIDDEN_TEXT", 0.5, "HTML with invisible text"},
	{"HTML_FORM", 1.0, "HTML form in a message"},
	{"HTML_LINK_MISMATCH", 2.0, "link text shows one domain, the link goes to another"},
	{"URL_SHORTENER", 1.0, "link through a URL shortener"},
	{"URL_NUMERIC_IP", 1.5, "link to a numeric IP address"},
	{"ATTACH_EXECUTABLE", 2.5, "executable or script attachment"},
	{"ATTACH_DOUBLE_EXT", 1.5, "attachment name with a double extension"},
	{"MIME_MALFORMED", 0.5, "broken MIME structure or encoding"},
	{"MIME_LIMITS", 0.5, "MIME nesting or part count over the limits"},
	{"HEADER_8BIT", 0.5, "raw 8-bit bytes in the header"},
	{"HELO_NUMERIC", 1.0, "HELO is an IP address"},
	{"BODY_EMPTY", 0.5, "no text and no attachment"},
}

// Thresholds of the date rules.
const (
	futureSlack = 12 * time.Hour
	pastSlack   = 96 * time.Hour
)

// runHeuristics returns the symbols of the rules that fired and are
// enabled, in the order of the heuristics table.
func runHeuristics(a *analysis, env *sdk.Envelope, s *settings) []sdk.Symbol {
	fired := map[string]string{}
	hit := func(name, detail string) { fired[name] = detail }
	h := a.header

	// Headers that should be there.
	from := h.Get("From")
	switch {
	case from == "":
		hit("MISSING_FROM", "")
	default:
		checkFrom(a.from, hit)
	}
	if len(h.Values("Date")) == 0 {
		hit("MISSING_DATE", "")
	} else {
		checkDate(h, hit)
	}
	if msgid := h.Get("Message-ID"); msgid == "" {
		hit("MISSING_MESSAGE_ID", "")
	} else if !validMsgID(msgid) {
		hit("MSGID_INVALID", truncate(msgid, 80))
	}
	if len(h.Values("Subject")) == 0 {
		hit("MISSING_SUBJECT", "")
	}
	to, cc := h.Get("To"), h.Get("Cc")
	if to == "" && cc == "" {
		hit("MISSING_TO", "")
	}
	if strings.Contains(strings.ToLower(to), "undisclosed") {
		hit("TO_UNDISCLOSED", "")
	}

	// Subject.
	if letters, upper := countCaps(a.subject); letters >= 10 && upper == letters {
		hit("SUBJ_ALL_CAPS", truncate(a.subject, 80))
	}
	if strings.Contains(a.subject, "!!!") || strings.Contains(a.subject, "$$$") || strings.Count(a.subject, "!") >= 4 {
		hit("SUBJ_EXCESS_PUNCT", truncate(a.subject, 80))
	}

	// Body and HTML.
	htmlText := strings.TrimSpace(a.htmlText.String())
	plainText := strings.TrimSpace(a.plain.String())
	if a.htmlParts > 0 && a.textParts == 0 {
		hit("HTML_ONLY", "")
	}
	if a.htmlParts > 0 && len(plainText) < 200 && len(htmlText) < 300 && (a.images > 0 || len(a.links) > 0) {
		hit("HTML_LITTLE_TEXT", fmt.Sprintf("%d characters, %d images, %d links", len(htmlText), a.images, len(a.links)))
	}
	if a.hidden {
		hit("HTML_HIDDEN_TEXT", "")
	}
	if a.forms > 0 {
		hit("HTML_FORM", "")
	}
	if plainText == "" && htmlText == "" && len(a.attach) == 0 {
		hit("BODY_EMPTY", "")
	}
	checkLinks(a, hit)
	checkAttachments(a, hit)

	// Structure.
	if a.stats.Malformed() {
		hit("MIME_MALFORMED", fmt.Sprintf("missing boundary %d, lost boundary %d, unterminated %d, bad base64 %d",
			a.stats.MissingBoundary, a.stats.LostBoundary, a.stats.Unterminated, a.stats.BadBase64))
	}
	if a.stats.DepthCapped || a.stats.PartsCapped {
		hit("MIME_LIMITS", fmt.Sprintf("depth %d, parts %d", a.stats.MaxDepth, a.stats.Parts))
	}
	// The raw header as read from the message (the host's parsed copy
	// may have been made valid UTF-8 for the protocol), or the parsed one.
	if a.stats.EightBitHeader > 0 {
		hit("HEADER_8BIT", "")
	}
	for _, f := range h {
		if hasHighBit(f.Value) && !strings.EqualFold(f.Name, "Received") {
			hit("HEADER_8BIT", f.Name)
			break
		}
	}

	// Envelope.
	if env != nil && env.HELO != "" {
		helo := strings.Trim(env.HELO, "[]")
		helo = strings.TrimPrefix(strings.ToLower(helo), "ipv6:")
		if _, err := netip.ParseAddr(helo); err == nil {
			hit("HELO_NUMERIC", env.HELO)
		}
	}

	var out []sdk.Symbol
	for _, r := range heuristics {
		detail, ok := fired[r.name]
		score, on := s.scores[r.name]
		if ok && on {
			out = append(out, sdk.Symbol{Name: r.name, Score: score, Detail: detail})
		}
	}
	return out
}

func checkFrom(from string, hit func(string, string)) {
	addr, err := mail.ParseAddress(from)
	if err != nil {
		// Lenient fallback: an address in angle brackets or a bare
		// word with an @.
		if i := strings.LastIndexByte(from, '<'); i >= 0 && strings.Contains(from[i:], "@") {
			end := strings.IndexByte(from[i:], '>')
			if end < 0 {
				end = len(from) - i
			}
			addr = &mail.Address{Name: strings.Trim(strings.TrimSpace(from[:i]), `"`), Address: from[i+1 : i+end]}
		} else if strings.Contains(from, "@") && !strings.ContainsAny(from, " \t") {
			addr = &mail.Address{Address: from}
		} else {
			hit("FROM_INVALID", truncate(from, 80))
			return
		}
	}
	_, domain, ok := strings.Cut(addr.Address, "@")
	if !ok || domain == "" {
		hit("FROM_INVALID", truncate(from, 80))
		return
	}
	// A display name that shows an address (or a bare domain) other
	// than the real one: "support@bank.example" <x@elsewhere.example>.
	name := strings.ToLower(addr.Name)
	domain = strings.ToLower(domain)
	if at := strings.IndexByte(name, '@'); at >= 0 {
		f := strings.FieldsFunc(name[at+1:], func(r rune) bool {
			return !(r == '.' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r))
		})
		if len(f) > 0 {
			shown := strings.Trim(f[0], ".")
			if strings.Contains(shown, ".") && regDomain(shown) != regDomain(domain) {
				hit("FROM_DISPLAY_SPOOF", fmt.Sprintf("shows %s, sent from %s", shown, domain))
			}
		}
	}
}

// checkDate compares Date with when the message was received: the date of
// the first Received field (Sluice's own, in production), or now.
func checkDate(h sdk.Header, hit func(string, string)) {
	v := h.Get("Date")
	d, err := mail.ParseDate(v)
	if err != nil {
		d, err = parseLooseDate(v)
		if err != nil {
			hit("DATE_INVALID", truncate(v, 80))
			return
		}
	}
	ref := time.Now()
	// The first (topmost) Received field: when our side got the message.
	if rs := h.Values("Received"); len(rs) > 0 {
		if i := strings.LastIndexByte(rs[0], ';'); i >= 0 {
			s := strings.TrimSpace(rs[0][i+1:])
			if t, err := mail.ParseDate(s); err == nil {
				ref = t
			} else if t, err := parseLooseDate(s); err == nil {
				ref = t
			}
		}
	}
	switch diff := d.Sub(ref); {
	case diff > futureSlack:
		hit("DATE_IN_FUTURE", fmt.Sprintf("%s ahead", diff.Round(time.Hour)))
	case diff < -pastSlack:
		hit("DATE_IN_PAST", fmt.Sprintf("%s behind", (-diff).Round(time.Hour)))
	}
}

// parseLooseDate reads dates that mail.ParseDate refuses but that are
// common and not forged: a trailing "(EDT)" comment, a missing weekday
// comma, a 2-digit year.
func parseLooseDate(v string) (time.Time, error) {
	if i := strings.IndexByte(v, '('); i > 0 {
		v = strings.TrimSpace(v[:i])
	}
	v = strings.Join(strings.Fields(v), " ")
	for _, layout := range []string{
		"Mon, 2 Jan 2006 15:04:05 -0700", "Mon 2 Jan 2006 15:04:05 -0700", "2 Jan 2006 15:04:05 -0700",
		"Mon, 2 Jan 06 15:04:05 -0700", "2 Jan 06 15:04:05 -0700", "Mon, 2 Jan 2006 15:04:05 MST",
		"Mon, 2 Jan 2006 15:04 -0700", "Mon, 2 Jan 2006 15:04:05", "Mon, 2 Jan 06 15:04:05 MST",
		"Mon Jan 2 15:04:05 2006", "Mon, 2 Jan 2006 15:04:05 -0700 MST",
	} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("spam: unparseable date %q", v)
}

// validMsgID checks the shape of a Message-ID: <left@right>, no spaces.
func validMsgID(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) < 5 || v[0] != '<' || v[len(v)-1] != '>' {
		return false
	}
	inner := v[1 : len(v)-1]
	l, r, ok := strings.Cut(inner, "@")
	return ok && l != "" && r != "" && !strings.ContainsAny(inner, " \t<>")
}

func countCaps(s string) (letters, upper int) {
	for _, r := range s {
		if unicode.IsLetter(r) {
			letters++
			if unicode.IsUpper(r) {
				upper++
			}
		}
	}
	return letters, upper
}

var shorteners = map[string]bool{
	"bit.ly": true, "tinyurl.com": true, "goo.gl": true, "t.co": true, "ow.ly": true, "is.gd": true,
	"buff.ly": true, "rebrand.ly": true, "cutt.ly": true, "shorturl.at": true, "tiny.cc": true,
	"rb.gy": true, "t.ly": true, "v.gd": true, "bl.ink": true, "lnkd.in": true, "s.id": true,
	"x.co": true, "qr.ae": true, "adf.ly": true, "shorte.st": true, "tr.im": true,
}

// checkLinks looks at the URLs of the HTML links and of the text.
func checkLinks(a *analysis, hit func(string, string)) {
	urls := make([]string, 0, len(a.links))
	for _, l := range a.links {
		urls = append(urls, l.href)
		if shown := urlHost(l.text); shown != "" && strings.Contains(shown, ".") {
			if target := urlHost(l.href); target != "" && strings.HasPrefix(strings.ToLower(l.href), "http") &&
				regDomain(shown) != regDomain(target) {
				hit("HTML_LINK_MISMATCH", fmt.Sprintf("shows %s, goes to %s", shown, target))
			}
		}
	}
	urls = append(urls, textURLs(a.plain.String(), maxLinks)...)
	for _, u := range urls {
		host := urlHost(u)
		if host == "" {
			continue
		}
		if shorteners[host] || shorteners[strings.TrimPrefix(host, "www.")] {
			hit("URL_SHORTENER", host)
		}
		if isNumericHost(host) {
			hit("URL_NUMERIC_IP", host)
		}
	}
}

// urlHost returns the lowercased host of s when s looks like a URL or a
// bare domain name (as link text does), else "".
func urlHost(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 2000 || strings.ContainsAny(s, " \t\r\n") {
		return ""
	}
	ls := strings.ToLower(s)
	switch {
	case strings.HasPrefix(ls, "http://"), strings.HasPrefix(ls, "https://"):
	case strings.HasPrefix(ls, "www."):
		s = "http://" + s
	default:
		// A bare domain such as "paypal.com" or "paypal.com/login".
		host, _, _ := strings.Cut(ls, "/")
		if !looksLikeDomain(host) {
			return ""
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}

func looksLikeDomain(h string) bool {
	i := strings.LastIndexByte(h, '.')
	if i <= 0 || i == len(h)-1 {
		return false
	}
	tld := h[i+1:]
	if len(tld) < 2 || len(tld) > 6 {
		return false
	}
	for _, r := range tld {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	for _, r := range h {
		if !(r == '.' || r == '-' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// isNumericHost reports an IP address, including the decimal and hex
// forms browsers accept (http://3232235777/).
func isNumericHost(host string) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "" {
		return false
	}
	for _, r := range host {
		if !(r == '.' || r == 'x' || '0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return host[0] >= '0' && host[0] <= '9'
}

// regDomain approximates the registered domain: the last two labels, or
// three under a two-letter country code with a generic second level
// (example.co.uk).
func regDomain(host string) string {
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	n := 2
	if len(labels) >= 3 && len(labels[len(labels)-1]) == 2 {
		switch labels[len(labels)-2] {
		case "co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go":
			n = 3
		}
	}
	if len(labels) <= n {
		return host
	}
	return strings.Join(labels[len(labels)-n:], ".")
}

// textURLs finds up to max URLs in plain text. It is linear in the text:
// the next "http" and "www." are each searched for once per occurrence.
func textURLs(text string, max int) []string {
	var out []string
	lower := asciiLower(text) // indexes into lower are indexes into text
	next := func(sub string, from int) int {
		if j := strings.Index(lower[from:], sub); j >= 0 {
			return from + j
		}
		return len(lower)
	}
	nh, nw := next("http", 0), next("www.", 0)
	for i := 0; len(out) < max; {
		if nh < i {
			nh = next("http", i)
		}
		if nw < i {
			nw = next("www.", i)
		}
		start := min(nh, nw)
		if start >= len(text) {
			break
		}
		end := start
		for end < len(text) && !strings.ContainsRune(" \t\r\n<>\"'()[]{}", rune(text[end])) {
			end++
		}
		u := strings.TrimRight(text[start:end], ".,;:!?")
		if lu := asciiLower(u); strings.HasPrefix(lu, "http://") || strings.HasPrefix(lu, "https://") || strings.HasPrefix(lu, "www.") {
			out = append(out, u)
		}
		i = max2(end, start+4)
	}
	return out
}

func max2(a, b int) int {
	if a > b {
		return a
	}
	return b
}

var executableExt = map[string]bool{
	"exe": true, "scr": true, "pif": true, "bat": true, "cmd": true, "com": true, "js": true, "jse": true,
	"vbs": true, "vbe": true, "wsf": true, "wsh": true, "hta": true, "jar": true, "msi": true, "lnk": true,
	"cpl": true, "reg": true, "ps1": true, "iso": true, "img": true, "vhd": true, "dll": true, "apk": true,
	"msc": true, "scf": true, "chm": true, "xll": true, "one": true,
}

var documentExt = map[string]bool{
	"pdf": true, "doc": true, "docx": true, "xls": true, "xlsx": true, "jpg": true, "jpeg": true, "png": true,
	"gif": true, "txt": true, "zip": true, "rtf": true, "ppt": true, "pptx": true, "htm": true, "html": true,
}

func checkAttachments(a *analysis, hit func(string, string)) {
	for _, at := range a.attach {
		name := strings.ToLower(strings.TrimSpace(at.name))
		if name == "" {
			continue
		}
		parts := strings.Split(name, ".")
		if len(parts) < 2 {
			continue
		}
		ext := parts[len(parts)-1]
		if executableExt[ext] {
			hit("ATTACH_EXECUTABLE", at.name)
			if len(parts) >= 3 && documentExt[parts[len(parts)-2]] {
				hit("ATTACH_DOUBLE_EXT", at.name)
			}
		}
	}
}

func hasHighBit(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// asciiLower lowercases A-Z only, keeping byte offsets (strings.ToLower
// may change a string's length).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
