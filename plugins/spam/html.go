package main

import (
	"bytes"
	"strings"

	"golang.org/x/net/html"
)

// link is an HTML anchor: where it goes and what it says.
type link struct {
	href string
	text string
}

// htmlDoc is what the filter takes from an HTML part.
type htmlDoc struct {
	text   string   // the visible text, white space collapsed
	links  []link   // anchors with an href
	images int      // <img> elements
	forms  int      // <form> elements
	tags   []string // distinct tag names, lowercased, in order of appearance
	tagsN  int      // start tags seen
	attrs  []string // tag:attribute=value of presentational attributes, tag:attribute of others
	hidden bool     // text styled invisible (display:none, font-size 0 or 1px)
}

// Bounds on what one HTML part yields (its input is already bounded by
// max_part_bytes).
const (
	maxLinks    = 500
	maxTagNames = 100
	maxLinkText = 500
	maxAttrs    = 2000
)

// parseHTML extracts text and links from HTML with the tokenizer (no tree
// is built, so deep nesting costs nothing), skipping script, style and
// head content. It accepts any input.
func parseHTML(b []byte) htmlDoc {
	var d htmlDoc
	z := html.NewTokenizer(bytes.NewReader(b))
	var text strings.Builder
	skip := 0    // inside script/style/title-less head content
	inLink := -1 // index in d.links of the open anchor
	seen := map[string]bool{}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			d.text = collapse(text.String())
			for i := range d.links {
				d.links[i].text = collapse(d.links[i].text)
			}
			return d
		case html.TextToken:
			if skip > 0 {
				continue
			}
			t := z.Text()
			text.Write(t)
			if inLink >= 0 && len(d.links[inLink].text) < maxLinkText {
				d.links[inLink].text += string(t)
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			if tt == html.EndTagToken {
				switch tag {
				case "script", "style":
					if skip > 0 {
						skip--
					}
				case "a":
					inLink = -1
				}
				if blockTag(tag) {
					text.WriteByte('\n')
				}
				continue
			}
			d.tagsN++
			if !seen[tag] && len(d.tags) < maxTagNames {
				seen[tag] = true
				d.tags = append(d.tags, tag)
			}
			var href, style, alt string
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if len(d.attrs) < maxAttrs {
					switch string(k) {
					case "color", "bgcolor", "size", "face", "align", "width", "border":
						val := strings.ToLower(string(v))
						if len(val) > 20 {
							val = val[:20]
						}
						d.attrs = append(d.attrs, tag+":"+string(k)+"="+val)
					case "href", "src", "style", "alt", "class", "id", "name", "title":
						d.attrs = append(d.attrs, tag+":"+string(k))
					}
				}
				switch string(k) {
				case "href":
					href = string(v)
				case "style":
					style = strings.ToLower(string(v))
				case "alt":
					alt = string(v)
				}
			}
			if strings.Contains(style, "display:none") || strings.Contains(style, "display: none") ||
				strings.Contains(style, "font-size:0") || strings.Contains(style, "font-size: 0") ||
				strings.Contains(style, "font-size:1px") {
				d.hidden = true
			}
			switch tag {
			case "script", "style":
				if tt == html.StartTagToken {
					skip++
				}
			case "a":
				inLink = -1
				if href != "" && len(d.links) < maxLinks {
					d.links = append(d.links, link{href: strings.TrimSpace(href)})
					inLink = len(d.links) - 1
				}
			case "img":
				d.images++
				if alt != "" {
					text.WriteString(" " + alt + " ")
				}
			case "form":
				d.forms++
			case "br", "p", "div", "tr", "li", "td":
				text.WriteByte(' ')
			}
			if blockTag(tag) {
				text.WriteByte('\n')
			}
		}
	}
}

func blockTag(tag string) bool {
	switch tag {
	case "p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "blockquote":
		return true
	}
	return false
}

// collapse turns runs of white space into one space.
func collapse(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
