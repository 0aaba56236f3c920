package queue

import (
	"encoding/json"
	"testing"
)

// recordV1 is a queue record as Sluice wrote it before the trace types
// left package pipeline (and before Action became an enumeration): queued
// messages from then must still load, and a record must still be written
// byte for byte the same.
const recordV1 = `{"id":"01J0000000000000000000000A","received":"2026-05-01T10:00:00Z","from":"sender@example.org",` +
	`"rcpts":[{"orig":"","addr":"rcpt@example.com","route":"local","state":"queued"}],"size":2048,"return_path":40,` +
	`"client":{"ip":"192.0.2.1","helo":"client.example","listener":"mx"},"status":"quarantine","hold_reason":"spam",` +
	`"pipeline":"inbound","score":7.5,"trace":[` +
	`{"stage":"spf","hook":"mail","action":"continue","score":0,"symbols":[],"ms":1.5},` +
	`{"stage":"dnsbl","hook":"connect","action":"tempfail","score":0,"symbols":[],"error":"timed out: context deadline exceeded after 5s","ms":5000.25,"wait_ms":12.5},` +
	`{"stage":"spam","hook":"data","action":"junk","verdict":"continue","score":5.5,"symbols":[{"name":"BAYES_SPAM","score":5.5,"detail":"0.99"},{"name":"NO_SCORE"}],"reason":"score 5.50","ms":3},` +
	`{"stage":"clamav","hook":"data","action":"quarantine","verdict":"reject","score":2,"symbols":[],"reason":"Eicar-Test-Signature","ms":4},` +
	`{"stage":"rcpt","hook":"rcpt","action":"reject","score":0,"symbols":[],"ms":0.1},` +
	`{"stage":"drop","hook":"data","action":"discard","score":0,"symbols":[],"ms":0.2}]}`

func TestRecordFormatV1(t *testing.T) {
	var m Message
	if err := json.Unmarshal([]byte(recordV1), &m); err != nil {
		t.Fatalf("a record in the earlier format does not load: %v", err)
	}
	if len(m.Trace) != 6 {
		t.Fatalf("trace = %+v", m.Trace)
	}
	var actions []string
	for _, r := range m.Trace {
		actions = append(actions, r.Action.String())
	}
	if got := actions; got[0] != "continue" || got[1] != "tempfail" || got[2] != "junk" || got[3] != "quarantine" || got[4] != "reject" || got[5] != "discard" {
		t.Errorf("actions = %v", got)
	}
	if s := m.Trace[2].Symbols; len(s) != 2 || s[0].Name != "BAYES_SPAM" || s[0].Score != 5.5 || s[0].Detail != "0.99" || s[1].Name != "NO_SCORE" {
		t.Errorf("symbols = %+v", s)
	}
	if r := m.Trace[1]; r.Error == "" || r.WaitMs != 12.5 || r.Ms != 5000.25 || r.Hook != "connect" {
		t.Errorf("failed stage = %+v", r)
	}
	if m.Trace[3].Verdict != "reject" {
		t.Errorf("verdict = %q", m.Trace[3].Verdict)
	}
	out, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != recordV1 {
		t.Errorf("the record is written differently:\n got %s\nwant %s", out, recordV1)
	}
}
