#!/usr/bin/python3
"""Verifies every DKIM signature of messages with dkimpy (Debian's
python3-dkim), an implementation independent of go-msgauth, offline.

usage: dkimverify.py RECORDS.json MESSAGE...

RECORDS.json maps DNS names (sel._domainkey.example.com) to the TXT value
of their key record; the script never queries the DNS. For each message
it prints one JSON object on a line:

    {"message": "a.eml", "pass": true,
     "signatures": ["pass d=example.com s=sel a=rsa-sha256",
                    "fail d=example.com s=ed a=ed25519-sha256 (reason)"]}

with the signatures top first; "pass" is true when the message has at
least one signature and every one passes. It exits 0 when every message
passes, 1 otherwise, 2 on bad usage.
"""

import json
import logging
import sys

import dkim


class Reasons(logging.Handler):
    """Keeps dkimpy's log lines, which say why a signature failed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def verify(message, dnsfunc):
    """Returns the result line of each signature of message, top first."""
    reasons = Reasons()
    logger = logging.getLogger("dkimverify")
    logger.handlers = [reasons]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    d = dkim.DKIM(message, logger=logger, minkey=1024)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    out = []
    for idx in range(count):
        reasons.lines.clear()
        d.signature_fields = {}
        try:
            good = d.verify(idx=idx, dnsfunc=dnsfunc)
            why = "; ".join(l for l in reasons.lines if not l.startswith("sig:"))[:300]
        except dkim.DKIMException as e:
            good, why = False, str(e)
        sig = d.signature_fields or {}
        tags = " ".join(
            "%s=%s" % (t, sig.get(t.encode(), b"?").decode("ascii", "replace")) for t in ("d", "s", "a")
        )
        out.append("%s %s%s" % ("pass" if good else "fail", tags, "" if good else " (%s)" % why))
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        records = {k.rstrip(".").lower(): v for k, v in json.load(f).items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        value = records.get(name.rstrip(".").lower())
        return None if value is None else value.encode("ascii")

    all_pass = True
    for path in argv[2:]:
        with open(path, "rb") as f:
            sigs = verify(f.read(), dnsfunc)
        ok = bool(sigs) and all(s.startswith("pass ") for s in sigs)
        all_pass = all_pass and ok
        print(json.dumps({"message": path, "pass": ok, "signatures": sigs}))
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
