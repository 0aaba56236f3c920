// Command spf is Sluice's SPF filter plugin (RFC 7208). It checks that the
// client may send mail for the MAIL FROM domain (for the HELO name when
// MAIL FROM is the null sender, RFC 7208 section 2.4), reports the result
// in Authentication-Results (RFC 8601: spf=pass smtp.mailfrom=example.org,
// or smtp.helo=... for the HELO identity), scores fail and softfail, and
// can refuse a fail (550 5.7.23) or a temperror (451 4.7.24, RFC 7372).
//
// It implements the mail hook (refusals at MAIL FROM) and the data hook
// (results, scores, and the same refusals for stages that run only the
// data hook). Use it in the inbound pipeline:
//
//	pipelines:
//	  inbound:
//	    - plugin: spf
//	      config:
//	        on_fail: reject
//
// Configuration keys and their defaults:
//
//	dns_servers     []     DNS servers as host:port; empty means the system resolver
//	timeout         5s     bound on each DNS lookup (the whole check: 20s, and the stage's timeout)
//	on_fail         score  score | quarantine | reject, for an SPF fail of MAIL FROM
//	fail_score      5      added for a fail
//	softfail_score  2      added for a softfail
//	check_helo      false  also check the HELO name (reported and scored, never enforced)
//	on_temperror    continue  continue | tempfail
//
// RFC 7208 section 4.6.4's limits apply: at most 10 DNS-querying terms
// and 2 void lookups, then permerror. SERVFAIL, timeouts and other DNS
// failures are temperror, and a temperror or permerror is never a
// rejection.
package main
