#!/usr/bin/env python3
"""A mail client for the integration tests, on Python's smtplib.

    smtpclient.py SCENARIO HOST:PORT [USER PASSWORD]

runs one scenario against one listener and prints one JSON object: either
{"result": ...} or, when smtplib raised, {"exception": CLASS, "code": ...,
"message": ..., "recipients": ...}. It connects to 127.0.0.1 only and never
verifies certificates (the server's is self-signed). The Go test asserts on
the JSON; this script only drives the client.
"""

import json
import smtplib
import ssl
import sys
from email.message import EmailMessage

TIMEOUT = 30


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    if host != "127.0.0.1":
        raise SystemExit("smtpclient.py: only 127.0.0.1 is allowed, got %r" % host)
    return host, int(port)


def message(sender, rcpts, subject):
    m = EmailMessage()
    m["From"] = sender
    m["To"] = ", ".join(rcpts)
    m["Subject"] = subject
    m["Message-ID"] = "<%s@smtpclient.test>" % subject.replace(" ", "-")
    m.set_content("Sent by smtplib for %s.\n" % subject)
    return m


def refused(d):
    return {k: [v[0], v[1].decode("utf-8", "replace")] for k, v in d.items()}


def mx_local(addr, *_):
    # Plain SMTP, no TLS, no AUTH: mail for a local user.
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        r = s.send_message(message("carol@remote.test", ["alice@example.test"], "smtplib mx"))
        return {"refused": refused(r)}


def mx_relay(addr, *_):
    # Plain SMTP to a remote domain without AUTH: relaying is denied.
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        r = s.send_message(message("carol@remote.test", ["friend@remote.test"], "smtplib relay"))
        return {"refused": refused(r)}


def starttls_send(addr, user, password):
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        s.ehlo()
        before = s.has_extn("auth")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo()
        after = s.has_extn("auth")
        s.login(user, password)
        r = s.send_message(message(user, ["friend@remote.test", "alice@example.test"], "smtplib starttls"))
        return {"refused": refused(r), "auth_before_tls": before, "auth_after_tls": after}


def ssl_send(addr, user, password):
    with smtplib.SMTP_SSL(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT,
                          context=ssl._create_unverified_context()) as s:
        s.login(user, password)
        r = s.send_message(message(user, ["friend@remote.test"], "smtplib ssl"))
        return {"refused": refused(r)}


def ssl_login_mech(addr, user, password):
    # AUTH LOGIN explicitly (login() would pick PLAIN first).
    with smtplib.SMTP_SSL(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT,
                          context=ssl._create_unverified_context()) as s:
        s.ehlo()
        s.user, s.password = user, password
        code, msg = s.auth("LOGIN", s.auth_login)
        return {"code": code}


def login_before_starttls(addr, user, password):
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        s.login(user, password)
        return {}


def starttls_login(addr, user, password):
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.login(user, password)
        return {}


def ssl_login(addr, user, password):
    with smtplib.SMTP_SSL(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT,
                          context=ssl._create_unverified_context()) as s:
        s.login(user, password)
        return {}


def mail_without_auth(addr, *_):
    # MAIL FROM after STARTTLS but without AUTH, and in the clear.
    out = {}
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        s.ehlo()
        code, _ = s.mail("carol@remote.test")
        out["plain"] = code
    with smtplib.SMTP(*host_port(addr), local_hostname="client.test", timeout=TIMEOUT) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo()
        code, _ = s.mail("carol@remote.test")
        out["tls"] = code
    return out


SCENARIOS = {
    "mx-local": mx_local,
    "mx-relay": mx_relay,
    "starttls-send": starttls_send,
    "ssl-send": ssl_send,
    "ssl-login-mech": ssl_login_mech,
    "login-before-starttls": login_before_starttls,
    "starttls-login": starttls_login,
    "ssl-login": ssl_login,
    "mail-without-auth": mail_without_auth,
}


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in SCENARIOS:
        print("usage: smtpclient.py {%s} HOST:PORT [USER PASSWORD]" % "|".join(sorted(SCENARIOS)), file=sys.stderr)
        return 2
    fn = SCENARIOS[sys.argv[1]]
    try:
        out = {"result": fn(*sys.argv[2:])}
    except smtplib.SMTPRecipientsRefused as e:
        out = {"exception": type(e).__name__, "recipients": refused(e.recipients)}
    except smtplib.SMTPResponseException as e:
        msg = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        out = {"exception": type(e).__name__, "code": e.smtp_code, "message": msg}
    except smtplib.SMTPException as e:
        out = {"exception": type(e).__name__, "message": str(e)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
