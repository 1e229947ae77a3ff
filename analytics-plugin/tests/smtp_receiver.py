#!/usr/bin/python3
"""A real SMTP server for the email channel's tests (aiosmtpd, Debian's
python3-aiosmtpd). Every message it accepts is written as one JSON file in
OUT_DIR: envelope, whether the session was encrypted and authenticated, and
the parsed headers and text/HTML parts.

usage: smtp_receiver.py PORT OUT_DIR [starttls|tls CERT KEY]
With `starttls` it offers STARTTLS and requires it before MAIL; with `tls`
it speaks TLS from the first byte (implicit TLS, as on port 465). Either
way it accepts AUTH (PLAIN/LOGIN) for user "alerts" with password "s3cret",
only over TLS. It prints "ready" once listening.
"""

import email
import email.policy
import json
import os
import ssl
import sys
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = b"alerts", b"s3cret"


class Recorder:
    def __init__(self, out_dir, implicit_tls):
        self.out_dir = out_dir
        self.implicit_tls = implicit_tls

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        parts = {}
        for part in message.walk():
            if part.get_content_maintype() == "text":
                parts[part.get_content_type()] = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": self.implicit_tls or session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "subject": str(message["subject"]),
            "from": str(message["from"]),
            "to": str(message["to"]),
            "message_id": str(message["message-id"]),
            "content_type": message.get_content_type(),
            "parts": parts,
        }
        path = os.path.join(self.out_dir, f"{time.time_ns()}-{uuid.uuid4().hex}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD
    # handled=False: aiosmtpd then answers 535 itself (the default, True,
    # means the authenticator already replied).
    return AuthResult(success=ok, handled=False)


def main():
    port, out_dir = int(sys.argv[1]), sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) == 6 else "none"
    kwargs = {}
    if mode != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        kwargs = dict(authenticator=authenticator)
    if mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    elif mode == "tls":
        # The whole connection is TLS; aiosmtpd's own check only knows STARTTLS.
        kwargs.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(Recorder(out_dir, mode == "tls"), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
