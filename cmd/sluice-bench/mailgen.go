package main

// The messages of the imap and pop3 sections: realistic mail, a few KiB
// each, generated from a seed so that every run (and both servers) gets
// the same bytes. Varied headers: From with and without display names
// (some quoted, some encoded words), To and Cc lists, a Subject that is
// sometimes an RFC 2047 encoded word and sometimes a reply, Message-ID,
// Date with different zones, In-Reply-To and References on replies, one
// to three Received lines; about a third are multipart/alternative (text
// and HTML, quoted-printable), the rest text/plain.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"mime"
	"strings"
	"time"
)

// benchMessage is one generated message.
type benchMessage struct {
	data []byte    // with CRLF line ends, as received over SMTP
	date time.Time // its Date header, also its internal date
}

// lf returns the message with LF line ends, as a Maildir holds it.
func (m benchMessage) lf() []byte { return bytes.ReplaceAll(m.data, []byte("\r\n"), []byte("\n")) }

var (
	genFirst = []string{"Anna", "Ben", "Chloé", "David", "Emma", "François", "Greta", "Hiroshi", "Ines", "Jonas",
		"Karin", "Łukasz", "Maria", "Nils", "Olga", "Pablo", "Quentin", "Rita", "Søren", "Tanja", "Uwe", "Vera",
		"Wojciech", "Xavier", "Yuki", "Zoë", "José", "Ömer", "Ana María", "Björn"}
	genLast = []string{"Schmidt", "Müller", "Dupont", "García", "Rossi", "Smith", "Nakamura", "Kowalski", "Jensen",
		"O'Brien", "van der Berg", "Nguyen", "Svensson", "Novák", "Fernández", "Weiß", "Brown", "Ivanova"}
	genDomains = []string{"example.com", "example.org", "mail.example.net", "corp.example", "lists.example.org",
		"university.example.edu", "shop.example", "bench.test"}
	genTopics = []string{"quarterly report", "meeting notes", "invoice 2026-%04d", "project status", "release %d.%d",
		"travel plans", "build failure on main", "lunch on Friday?", "draft contract", "holiday schedule",
		"server migration", "budget review", "customer feedback", "ticket #%d", "new hire onboarding"}
	genUnicodeTopics = []string{"Grüße aus München", "Réunion de l'équipe", "Überprüfung der Rechnung", "Año nuevo",
		"Привет из Москвы", "会議の議事録", "Zażółć gęślą jaźń", "Smörgåsbord på fredag", "Καλημέρα", "café ☕ à 15h"}
	genWords = strings.Fields(`the a of to and in is it that for on with as was be by this are at from or have an
		they which one you were her all she there would their we him been has when who will more no if out so said
		what up its about into than them can only other new some could time these two may then do first any my now
		such like our over man me even most made after also did many before must through back years where much your
		way well down should because each just those people how too little state good very make world still own see
		men work long get here between both life being under never day same another know while last might us great
		old year off come since against go came right used take three schedule review deploy server message mailbox
		invoice quarter budget release ticket customer report meeting agenda draft contract feedback migration`)
	genMailers = []string{"Thunderbird 128.3.1", "Apple Mail (2.3776)", "Microsoft Outlook 16.0", "Evolution 3.50.2",
		"Mutt/2.2.12 (2023-09-09)", "Roundcube Webmail/1.6.9"}
)

// generateMessages returns n messages made from seed; the same seed gives
// the same messages.
func generateMessages(seed uint64, n int) []benchMessage {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	msgs := make([]benchMessage, n)
	for i := range msgs {
		base = base.Add(time.Duration(60+r.IntN(3600)) * time.Second)
		msgs[i] = genMessage(r, i, base)
	}
	return msgs
}

func genName(r *rand.Rand) (display, local string) {
	f, l := genFirst[r.IntN(len(genFirst))], genLast[r.IntN(len(genLast))]
	local = strings.ToLower(asciiFold(f) + "." + asciiFold(l))
	return f + " " + l, local
}

// asciiFold turns a name into something usable as a local part.
func asciiFold(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == ' ' || c == '\'':
		case c < 0x80:
			b.WriteRune(c)
		default:
			b.WriteByte('x')
		}
	}
	return b.String()
}

// genAddress returns an address header value in one of the forms mail
// clients write.
func genAddress(r *rand.Rand) string {
	display, local := genName(r)
	domain := genDomains[r.IntN(len(genDomains))]
	addr := local + "@" + domain
	switch k := r.IntN(10); {
	case k == 0:
		return addr
	case k == 1:
		return "<" + addr + ">"
	case !isASCII(display):
		// Encoded word, as clients do for non-ASCII names.
		if r.IntN(2) == 0 {
			return mime.QEncoding.Encode("UTF-8", display) + " <" + addr + ">"
		}
		return mime.BEncoding.Encode("UTF-8", display) + " <" + addr + ">"
	case k < 4 || strings.Contains(display, "'"):
		// "Last, First" needs quotes.
		parts := strings.SplitN(display, " ", 2)
		return fmt.Sprintf("%q <%s>", parts[1]+", "+parts[0], addr)
	default:
		return display + " <" + addr + ">"
	}
}

func genAddressList(r *rand.Rand, n int) string {
	var list []string
	for range n {
		list = append(list, genAddress(r))
	}
	return strings.Join(list, ",\r\n ")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func genSubject(r *rand.Rand, i int) string {
	if r.IntN(4) == 0 {
		s := genUnicodeTopics[r.IntN(len(genUnicodeTopics))]
		if r.IntN(2) == 0 {
			return mime.BEncoding.Encode("UTF-8", s)
		}
		return mime.QEncoding.Encode("UTF-8", s)
	}
	t := genTopics[r.IntN(len(genTopics))]
	if n := strings.Count(t, "%"); n > 0 {
		args := []any{i, r.IntN(10)}
		t = fmt.Sprintf(t, args[:n]...)
	}
	return strings.ToUpper(t[:1]) + t[1:]
}

func genParagraphs(r *rand.Rand, size int) []string {
	var paras []string
	n := 0
	for n < size {
		var b strings.Builder
		words := 20 + r.IntN(60)
		for w := range words {
			word := genWords[r.IntN(len(genWords))]
			if w == 0 {
				word = strings.ToUpper(word[:1]) + word[1:]
			}
			b.WriteString(word)
			if w == words-1 {
				b.WriteByte('.')
			} else if r.IntN(12) == 0 {
				b.WriteString(", ")
			} else {
				b.WriteByte(' ')
			}
		}
		paras = append(paras, b.String())
		n += b.Len() + 4
	}
	return paras
}

// wrap breaks a paragraph into lines of at most 76 characters.
func wrap(p string) []string {
	var lines []string
	for len(p) > 76 {
		i := strings.LastIndexByte(p[:76], ' ')
		if i <= 0 {
			i = 76
		}
		lines = append(lines, p[:i])
		p = strings.TrimLeft(p[i:], " ")
	}
	return append(lines, p)
}

var genZones = []*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("", 2*3600),
	time.FixedZone("", -5*3600), time.FixedZone("", -8*3600), time.FixedZone("", 9*3600), time.FixedZone("", 5*3600+1800)}

func genMessage(r *rand.Rand, i int, date time.Time) benchMessage {
	var h strings.Builder
	hdr := func(name, value string) { h.WriteString(name + ": " + value + "\r\n") }
	local := date.In(genZones[r.IntN(len(genZones))])
	fromDomain := genDomains[r.IntN(len(genDomains))]
	id := fmt.Sprintf("<%016x.%d@%s>", r.Uint64(), i, fromDomain)

	for k := range 1 + r.IntN(3) {
		hop := date.Add(-time.Duration(k*(1+r.IntN(20))) * time.Second)
		hdr("Received", fmt.Sprintf("from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby mail.bench.test with ESMTPS id %08X\r\n\tfor <rcpt@bench.test>; %s",
			k+1, fromDomain, k+1, fromDomain, 1+r.IntN(250), r.Uint32(), hop.Format(time.RFC1123Z)))
	}
	hdr("From", genAddress(r))
	hdr("To", genAddressList(r, 1+r.IntN(4)))
	if r.IntN(10) < 4 {
		hdr("Cc", genAddressList(r, 1+r.IntN(5)))
	}
	subject := genSubject(r, i)
	reply := i > 0 && r.IntN(4) == 0
	if reply {
		subject = "Re: " + subject
	}
	hdr("Subject", subject)
	hdr("Date", local.Format(time.RFC1123Z))
	hdr("Message-ID", id)
	if reply {
		parent := fmt.Sprintf("<%016x.%d@%s>", r.Uint64(), r.IntN(i), genDomains[r.IntN(len(genDomains))])
		hdr("In-Reply-To", parent)
		hdr("References", parent)
	}
	if r.IntN(3) > 0 {
		hdr("X-Mailer", genMailers[r.IntN(len(genMailers))])
	}
	hdr("MIME-Version", "1.0")

	paras := genParagraphs(r, 1000+r.IntN(4500))
	var body strings.Builder
	if r.IntN(3) == 0 {
		boundary := fmt.Sprintf("=_bench_%08x", r.Uint32())
		hdr("Content-Type", "multipart/alternative;\r\n\tboundary=\""+boundary+"\"")
		body.WriteString("This is a multi-part message in MIME format.\r\n\r\n--" + boundary + "\r\n")
		body.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
		for _, p := range paras {
			for _, l := range wrap(p) {
				body.WriteString(l + "\r\n")
			}
			body.WriteString("\r\n")
		}
		body.WriteString("--" + boundary + "\r\n")
		body.WriteString("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		body.WriteString("<html><head><meta http-equiv=3D\"Content-Type\" content=3D\"text/html; charset=3Dutf-8\"></head>\r\n<body>\r\n")
		for _, p := range paras {
			for _, l := range wrap("<p style=3D\"margin:0\">" + p + "</p>") {
				body.WriteString(l + "=\r\n")
			}
			body.WriteString("\r\n")
		}
		body.WriteString("</body></html>\r\n--" + boundary + "--\r\n")
	} else {
		hdr("Content-Type", "text/plain; charset=utf-8; format=flowed")
		hdr("Content-Transfer-Encoding", "7bit")
		for _, p := range paras {
			for _, l := range wrap(p) {
				body.WriteString(l + "\r\n")
			}
			body.WriteString("\r\n")
		}
		body.WriteString("-- \r\nSent from the benchmark\r\n")
	}
	data := []byte(h.String() + "\r\n" + body.String())
	return benchMessage{data: data, date: date.Truncate(time.Second)}
}
