#!/usr/bin/env python3
"""A POP3 client for the integration tests, on Python's poplib.

    pop3client.py stls|tls HOST:PORT USER PASSWORD [ACTION...]

connects with STLS (stls) or implicit TLS (tls), logs in with USER/PASS,
reads STAT, LIST and UIDL, runs the actions in order and QUITs. Actions:
retr:N, top:N:LINES, dele:N, rset. It prints one JSON object:
{"welcome", "capa_before_tls" (stls only), "capa", "stat", "list", "uidl",
"results": [...], "quit"} or, when poplib raised, {"exception", "message"}.
It connects to 127.0.0.1 only and never verifies certificates (the
server's is self-signed). The Go test asserts on the JSON.
"""

import json
import poplib
import ssl
import sys

TIMEOUT = 30


def text(b):
    return b.decode("utf-8", "replace")


def capa(p):
    return sorted(k + (" " + " ".join(v) if v else "") for k, v in p.capa().items())


def main():
    mode, addr, user, password = sys.argv[1:5]
    actions = sys.argv[5:]
    host, port = addr.rsplit(":", 1)
    if host != "127.0.0.1":
        raise SystemExit("pop3client.py: only 127.0.0.1 is allowed, got %r" % host)
    ctx = ssl._create_unverified_context()
    out = {}
    try:
        if mode == "tls":
            p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=TIMEOUT)
        else:
            p = poplib.POP3(host, int(port), timeout=TIMEOUT)
            out["capa_before_tls"] = capa(p)
            p.stls(context=ctx)
        out["welcome"] = text(p.getwelcome())
        out["capa"] = capa(p)
        p.user(user)
        p.pass_(password)
        out["stat"] = list(p.stat())
        out["list"] = [text(l) for l in p.list()[1]]
        out["uidl"] = [text(l) for l in p.uidl()[1]]
        results = []
        for a in actions:
            name, *args = a.split(":")
            if name == "retr":
                resp, lines, _ = p.retr(int(args[0]))
                results.append({"resp": text(resp), "message": "".join(text(l) + "\r\n" for l in lines)})
            elif name == "top":
                resp, lines, _ = p.top(int(args[0]), int(args[1]))
                results.append({"resp": text(resp), "message": "".join(text(l) + "\r\n" for l in lines)})
            elif name == "dele":
                results.append({"resp": text(p.dele(int(args[0])))})
            elif name == "rset":
                results.append({"resp": text(p.rset())})
            else:
                raise SystemExit("pop3client.py: unknown action %r" % a)
        out["results"] = results
        out["quit"] = text(p.quit())
    except poplib.error_proto as e:
        out = {"exception": type(e).__name__, "message": text(e.args[0]) if e.args and isinstance(e.args[0], bytes) else str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
