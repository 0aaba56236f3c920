#!/usr/bin/env python3
"""An IMAP or POP3 session for the integration tests, on imaplib and poplib.

    mailclient.py imap|pop3 HOST:PORT plain|starttls|tls

opens one connection (tls: implicit TLS; starttls and plain: in the clear,
the test sends "starttls" itself) and then reads one JSON request a line
from stdin and writes one JSON reply a line to stdout, until stdin ends.
The Go test drives the session step by step, so that two sessions (IMAP
and POP3 on one mailbox) can be interleaved, and asserts on the replies;
this script only drives the client. It connects to 127.0.0.1 only and never
verifies certificates (the server's is self-signed).

Replies: {"typ": "OK", "data": [ITEM...], "untagged": {"TYPE": [ITEM...]}}
or {"error": "...", "exception": CLASS} when the library raised. An ITEM
is {"l": LINE} or, for a response with a literal, {"l": LINE, "b": BASE64}.
"""

import base64
import imaplib
import json
import poplib
import socket
import ssl
import sys
import time

TIMEOUT = 30


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    if host != "127.0.0.1":
        raise SystemExit("mailclient.py: only 127.0.0.1 is allowed, got %r" % host)
    return host, int(port)


def ctx():
    return ssl._create_unverified_context()


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def item(x):
    if isinstance(x, tuple):
        d = {"l": text(x[0])}
        if len(x) > 1 and x[1] is not None:
            d["b"] = base64.b64encode(x[1]).decode()
        return d
    if x is None:
        return {"l": ""}
    return {"l": text(x)}


class IMAP:
    def __init__(self, addr, mode):
        host, port = host_port(addr)
        if mode == "tls":
            self.m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx(), timeout=TIMEOUT)
        else:
            self.m = imaplib.IMAP4(host, port, timeout=TIMEOUT)
        self.idle_tag = None

    def untagged(self):
        u = {k: [item(x) for x in v] for k, v in self.m.untagged_responses.items()}
        self.m.untagged_responses.clear()
        return u

    def reply(self, typ, data):
        return {"typ": text(typ), "data": [item(x) for x in (data or [])], "untagged": self.untagged()}

    def do(self, req):
        op = req["op"]
        m = self.m
        if op == "greeting":
            return {"typ": "OK", "data": [{"l": text(m.welcome)}], "untagged": {}}
        if op == "capability":
            typ, data = m.capability()
            r = self.reply(typ, data)
            r["caps"] = text(data[0]).split() if data and data[0] else []
            return r
        if op == "starttls":
            typ, data = m.starttls(ssl_context=ctx())
            return self.reply(typ, data)
        if op == "login":
            typ, data = m.login(req["user"], req["password"])
            return self.reply(typ, data)
        if op == "select":
            typ, data = m.select(req.get("mailbox", "INBOX"), req.get("readonly", False))
            return self.reply(typ, data)
        if op == "append":
            msg = base64.b64decode(req["message"])
            typ, data = m.append(req["mailbox"], req.get("flags"), None, msg)
            return self.reply(typ, data)
        if op == "cmd":
            # Any other command, with its arguments as given (quote them in
            # the request). The tagged response's text is in "data".
            typ, data = m._simple_command(*req["args"])
            return self.reply(typ, data)
        if op == "idle_start":
            self.idle_tag = m._new_tag()
            m.send(self.idle_tag + b" IDLE\r\n")
            line = m._get_line()
            if not line.startswith(b"+"):
                raise imaplib.IMAP4.error("IDLE: got %r, want a continuation" % line)
            return {"typ": "OK", "data": [item(line)], "untagged": {}}
        if op == "idle_wait":
            # Read untagged lines until one contains "want" (or the
            # deadline passes: an error, the session is then unusable).
            want = req["want"].encode()
            lines = []
            m.sock.settimeout(req.get("timeout", TIMEOUT))
            try:
                while True:
                    line = m._get_line()
                    lines.append(item(line))
                    if want in line:
                        break
            finally:
                m.sock.settimeout(TIMEOUT)
            return {"typ": "OK", "data": lines, "untagged": {}}
        if op == "idle_done":
            m.send(b"DONE\r\n")
            lines = []
            while True:
                line = m._get_line()
                lines.append(item(line))
                if line.startswith(self.idle_tag + b" "):
                    break
            self.idle_tag = None
            typ = text(lines[-1]["l"].split(" ")[1]) if lines else ""
            return {"typ": typ, "data": lines, "untagged": {}}
        if op == "logout":
            typ, data = m.logout()
            return self.reply(typ, data)
        raise ValueError("unknown imap op %r" % op)


class POP3:
    def __init__(self, addr, mode):
        host, port = host_port(addr)
        if mode == "tls":
            self.m = poplib.POP3_SSL(host, port, context=ctx(), timeout=TIMEOUT)
        else:
            self.m = poplib.POP3(host, port, timeout=TIMEOUT)

    def do(self, req):
        op = req["op"]
        m = self.m
        if op == "greeting":
            return {"typ": text(m.getwelcome())}
        if op == "capa":
            return {"typ": "+OK", "capa": {k: v for k, v in m.capa().items()}}
        if op == "stls":
            return {"typ": text(m.stls(context=ctx()))}
        if op == "user":
            return {"typ": text(m.user(req["user"]))}
        if op == "pass":
            return {"typ": text(m.pass_(req["password"]))}
        if op == "login":
            m.user(req["user"])
            return {"typ": text(m.pass_(req["password"]))}
        if op == "stat":
            n, size = m.stat()
            return {"typ": "+OK", "count": n, "size": size}
        if op in ("list", "uidl"):
            resp, lines, _ = getattr(m, op)()
            return {"typ": text(resp), "lines": [text(x) for x in lines]}
        if op == "retr":
            resp, lines, _ = m.retr(req["n"])
            data = b"".join(x + b"\r\n" for x in lines)
            return {"typ": text(resp), "message": base64.b64encode(data).decode()}
        if op == "dele":
            return {"typ": text(m.dele(req["n"]))}
        if op == "noop":
            return {"typ": text(m.noop())}
        if op == "rset":
            return {"typ": text(m.rset())}
        if op == "raw":
            return {"typ": text(m._shortcmd(req["line"]))}
        if op == "quit":
            return {"typ": text(m.quit())}
        raise ValueError("unknown pop3 op %r" % op)


def main():
    proto, addr, mode = sys.argv[1:4]
    try:
        c = IMAP(addr, mode) if proto == "imap" else POP3(addr, mode)
        hello = {"typ": "OK"}
    except Exception as e:  # the connection itself failed
        c, hello = None, {"error": str(e), "exception": type(e).__name__}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            if c is None:
                raise ConnectionError("not connected")
            r = c.do(req)
        except Exception as e:
            msg = e.args[0] if len(e.args) == 1 else str(e)
            r = {"error": text(msg), "exception": type(e).__name__}
            if isinstance(c, IMAP):
                r["untagged"] = c.untagged()
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
