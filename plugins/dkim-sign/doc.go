// Command dkim-sign is Sluice's DKIM signing filter plugin (RFC 6376, with
// RFC 8301's rsa-sha256 and RFC 8463's ed25519-sha256), for the outbound
// pipeline. It adds a DKIM-Signature header field to each message whose
// author domain has a key, so that receivers can check that the message
// comes from that domain unaltered, and DMARC aligns on it.
//
// Which domain signs: the domain of the header From (RFC 5322 section
// 3.6.2), the identifier DMARC protects (RFC 7489 section 3.1), not the
// MAIL FROM domain: a signature for the envelope sender's domain would
// not help the message pass DMARC. The signature's d= is the key's
// domain: the From domain itself, or, for a key with subdomains: true, a
// parent of it (relaxed DMARC alignment accepts that). A key for exactly
// the From domain wins over a parent's. All the keys of that domain sign,
// so an RSA key and an Ed25519 key listed for one domain give two
// signatures (RFC 8463 section 4 suggests both while verifiers learn
// Ed25519).
//
// What is signed (docs/security.md): c=relaxed/relaxed, the whole body (never
// l=), and h= with From, To, Subject, Date and Message-ID each listed once
// more than the message has them (over-signing, RFC 6376 section 8.15: a
// copy added later breaks the signature), then Reply-To, Cc, In-Reply-To,
// References, MIME-Version, Content-Type and Content-Transfer-Encoding as
// often as the message has them. Received fields are never signed: the
// message data starts with Sluice's own, and relays add theirs.
//
// It only signs in the outbound pipeline (mail from Sluice's own
// authenticated users); in another pipeline it passes every message
// unsigned, so that a stage put in the inbound pipeline by mistake does
// not sign mail from strangers. It never refuses a message and never
// fails on one it cannot parse: such a message passes unsigned, with a
// symbol and a reason in the trace. It returns an error only when the
// message could not be read (or the stage ran out of time): the stage's
// on_error decides then. Symbols, all with score 0:
//
//	DKIM_SIGNED             signed; detail: d=DOMAIN s=SELECTOR a=ALGORITHM
//	DKIM_SIGN_NO_KEY        no key for the From domain; detail: the domain
//	DKIM_SIGN_BAD_FROM      no From field, several, or one without a usable domain
//	DKIM_SIGN_UNPARSABLE    the header cannot be signed as it is (too large, a line that is not a field)
//	DKIM_SIGN_FAILED        the signer refused the message
//	DKIM_SIGN_NOT_OUTBOUND  the stage is not in the outbound pipeline
//
// The message is hashed as it streams in: the plugin holds its header,
// never its body.
//
//	pipelines:
//	  outbound:
//	    - plugin: dkim-sign
//	      timeout: 30s
//	      on_error: tempfail
//	      config:
//	        keys:
//	          - domain: example.com
//	            selector: s2026
//	            key_file: /var/lib/sluice/dkim/example.com.s2026.key
//
// 'sluice dkim keygen DOMAIN SELECTOR' makes a key, prints its DNS record
// and this snippet.
//
// The configuration keys are documented in their declaration, config in
// keys.go, which docs/plugins.md and 'sluice config defaults --plugin
// dkim-sign' print.
package main
