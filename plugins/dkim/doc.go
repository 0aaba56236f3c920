// Command dkim is Sluice's DKIM verification filter plugin (RFC 6376, with
// RFC 8301's rsa-sha256 and RFC 8463's ed25519-sha256). It verifies every
// DKIM signature of a message, up to max_signatures, and reports each in
// Authentication-Results (RFC 8601 section 2.7.1: dkim=pass
// header.d=example.org header.s=sel header.a=rsa-sha256 header.b=...), or
// dkim=none for an unsigned message. It never refuses a message; DMARC (the
// dmarc plugin) decides what a missing pass means.
//
// Results: pass; fail (the body or header changed, the key does not match);
// policy (the signature has a body length limit, l=: content past it
// would be unsigned, so it is never a pass); neutral (a syntactically
// broken signature); temperror (a DNS failure); permerror (no key, a
// revoked or invalid key, an expired signature, rsa-sha1).
//
//	pipelines:
//	  inbound:
//	    - plugin: dkim
//
// Configuration keys and their defaults:
//
//	dns_servers     []  DNS servers as host:port; empty means the system resolver
//	timeout         5s  bound on each DNS lookup
//	max_signatures  5   signatures verified (1 to 20), the first in the header
//	fail_score      0   added when a signature fails and none passes
package main
