package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// The tests run the filter through sdktest, which serves it over the same
// gRPC protocol Sluice uses with a plugin process: what passes here passes
// in production, without building a binary.

func TestSubjectMatch(t *testing.T) {
	tests := []struct {
		name    string
		config  map[string]any
		subject string
		want    sdk.Action
		code    int
		text    string
	}{
		{"no match", map[string]any{"pattern": `(?i)\bviagra\b`}, "Minutes of the meeting", sdk.Continue, 0, ""},
		{"match rejects", map[string]any{"pattern": `(?i)\bviagra\b`}, "Cheap VIAGRA here", sdk.Reject, 550, "Message refused"},
		{"case-sensitive by default", map[string]any{"pattern": `viagra`}, "Cheap VIAGRA here", sdk.Continue, 0, ""},
		{"custom text", map[string]any{"pattern": `lottery`, "text": "Not here"}, "You won the lottery", sdk.Reject, 550, "Not here"},
		{"quarantine", map[string]any{"pattern": `lottery`, "action": "quarantine"}, "You won the lottery", sdk.Quarantine, 0, ""},
		{"explicit reject", map[string]any{"pattern": `lottery`, "action": "reject"}, "You won the lottery", sdk.Reject, 550, "Message refused"},
		// RFC 2047: the words are decoded before matching.
		{"base64 word", map[string]any{"pattern": `Buy now`}, "=?UTF-8?B?QnV5IG5vdw==?=", sdk.Reject, 550, "Message refused"},
		{"q word, latin-1", map[string]any{"pattern": `^Café gratuit$`}, "=?ISO-8859-1?Q?Caf=E9_gratuit?=", sdk.Reject, 550, "Message refused"},
		{"words around text", map[string]any{"pattern": `Prix: 100 €`}, "Prix: =?UTF-8?Q?100_=E2=82=AC?=", sdk.Reject, 550, "Message refused"},
		{"unknown charset matched raw", map[string]any{"pattern": `KOI8-R`}, "=?KOI8-R?B?8NLJ18XU?=", sdk.Reject, 550, "Message refused"},
		{"no subject", map[string]any{"pattern": `.`}, "", sdk.Continue, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.Start(t, newSubjectFilter(), tt.config)
			raw := "From: a@example.org\nTo: b@example.com\n"
			if tt.subject != "" {
				raw += "Subject: " + tt.subject + "\n"
			}
			raw += "\nHello.\n"
			v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil))
			if err != nil {
				t.Fatalf("Check(%q) error %v", tt.subject, err)
			}
			if v.Action != tt.want || v.Code != tt.code || v.Text != tt.text {
				t.Errorf("Check(%q) = %v %d %q, want %v %d %q", tt.subject, v.Action, v.Code, v.Text, tt.want, tt.code, tt.text)
			}
			if tt.want != sdk.Continue {
				if !strings.HasPrefix(v.Reason, reasonSubjectMatched) {
					t.Errorf("Check(%q).Reason = %q, want it to start with %q", tt.subject, v.Reason, reasonSubjectMatched)
				}
				if len(v.Symbols) != 1 || v.Symbols[0].Name != symbolSubject {
					t.Errorf("Check(%q).Symbols = %v, want one %s", tt.subject, v.Symbols, symbolSubject)
				}
			}
		})
	}
}

// A folded Subject is unfolded before matching.
func TestFoldedSubject(t *testing.T) {
	r := sdktest.Start(t, newSubjectFilter(), map[string]any{"pattern": `^Free money$`})
	raw := "Subject: =?UTF-8?Q?Free?=\n =?UTF-8?Q?_money?=\n\nbody\n"
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil))
	if err != nil || v.Action != sdk.Reject {
		t.Errorf("Check(folded subject) = %v, %v, want reject", v.Action, err)
	}
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   string // in the error
	}{
		{"missing pattern", map[string]any{}, "pattern is required"},
		{"no config", nil, "pattern is required"},
		{"bad pattern", map[string]any{"pattern": `(unclosed`}, "pattern"},
		{"bad action", map[string]any{"pattern": `x`, "action": "explode"}, "explode"},
		{"unknown key", map[string]any{"pattern": `x`, "patern": `y`}, "patern"},
		{"empty text", map[string]any{"pattern": `x`, "text": " "}, "text must not be empty"},
		{"empty action", map[string]any{"pattern": `x`, "action": ""}, "action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.StartUnconfigured(t, newSubjectFilter())
			err := sdktest.Configure(r, tt.config)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error mentioning %q", tt.config, err, tt.want)
			}
		})
	}
}

// A refused reload keeps the configuration in force.
func TestRefusedReloadKeepsConfig(t *testing.T) {
	r := sdktest.Start(t, newSubjectFilter(), map[string]any{"pattern": `lottery`})
	if err := sdktest.Configure(r, map[string]any{"pattern": `(`}); err == nil {
		t.Fatal("Configure(bad pattern) = nil")
	}
	v, err := r.Check(context.Background(), sdktest.Message(t, "Subject: lottery\n\nx\n", nil))
	if err != nil || v.Action != sdk.Reject {
		t.Errorf("Check after a refused reload = %v, %v, want reject", v.Action, err)
	}
}

func TestDescribe(t *testing.T) {
	r := sdktest.Start(t, newSubjectFilter(), map[string]any{"pattern": `x`})
	info, err := r.Describe(context.Background())
	if err != nil || info.Name != "example" || info.HookList() != "data" {
		t.Errorf("Describe = %+v, %v, want example with the data hook only", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "example", newSubjectFilter()) }
