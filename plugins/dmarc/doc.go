// Command dmarc is Sluice's DMARC filter plugin (RFC 7489). It finds the
// author domain (the RFC 5322 From), looks its policy up at
// _dmarc.<domain> and else at _dmarc.<Organizational Domain> (from the
// Public Suffix List), checks SPF and DKIM itself, and passes a message
// with an SPF or DKIM pass aligned with the From domain (relaxed or
// strict, adkim= and aspf=). A failing message gets the domain's policy
// (sp= for a subdomain without its own record), sampled by pct=: reject
// refuses it with 550 5.7.1, quarantine quarantines it, none only reports.
// The result goes into Authentication-Results as dmarc=pass|fail|none|
// temperror|permerror header.from=<domain>, with the policy in the reason.
//
// SPF and DKIM are computed here again because the spf and dkim stages run
// in other processes, at the same time: their results are not available.
// A message whose From domain has no policy costs one or two DNS lookups
// and is not read.
//
//	pipelines:
//	  inbound:
//	    - plugin: dmarc
//	      config:
//	        enforce: true
//
// Configuration keys and their defaults:
//
//	dns_servers     []        DNS servers as host:port; empty means the system resolver
//	timeout         5s        bound on each DNS lookup
//	enforce         true      apply reject and quarantine; false reports (and scores) only
//	honor_pct       true      apply pct= sampling; false applies the policy to every failure
//	on_temperror    continue  continue | tempfail (451, unless the policy is known to be none)
//	max_signatures  5         DKIM signatures verified (1 to 20)
//	fail_score      0         added when DMARC fails, whatever the policy
//
// A temperror (a DNS failure, or an aligned SPF or DKIM check that could
// not complete) never refuses a message for good. A permerror (several
// DMARC records, an invalid one, several From fields, From addresses in
// several domains, an unparsable From) is reported, not enforced.
package main
