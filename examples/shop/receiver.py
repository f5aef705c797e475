"""A local stand-in for the shop's systems: prints the webhooks and emails tripwire sends.

    python examples/shop/receiver.py            # webhooks on :8701, SMTP on :8025

Every webhook's Standard Webhooks signature is checked with the example secret, and a
repeated webhook-id (a retry after a lost answer) is shown as such: this is how a real
receiver uses the idempotency key. Listens on 127.0.0.1 only; stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

EXAMPLE_SECRET = "whsec_dHJpcHdpcmUtZXhhbXBsZS1zZWNyZXQta2V5IQ=="


def webhook_server(port: int, secret: str) -> ThreadingHTTPServer:
    verifier = Webhook(secret)
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the stdlib names it so
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                print(f"webhook REJECTED ({exc})", flush=True)
                self.send_response(401)
                self.end_headers()
                return
            with lock:
                repeat = headers.get("webhook-id") in seen
                seen.add(headers.get("webhook-id", ""))
            fire = payload.get("fire", {})
            note = " (a repeat: already handled)" if repeat else ""
            print(f"webhook {fire.get('trigger')} for {fire.get('user_id')} at {fire.get('fire_time')}{note}",
                  flush=True)  # fmt: skip
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


class PrintMail:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's name
        mail = message_from_bytes(envelope.content, policy=email_policy)
        print(f"email to {', '.join(envelope.rcpt_tos)}: {mail['subject']}", flush=True)
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhook-port", type=int, default=8701)
    parser.add_argument("--smtp-port", type=int, default=8025)
    args = parser.parse_args()
    secret = os.environ.get("SHOP_WEBHOOK_SECRET") or EXAMPLE_SECRET
    hooks = webhook_server(args.webhook_port, secret)
    smtp = Controller(PrintMail(), hostname="127.0.0.1", port=args.smtp_port)
    smtp.start()
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    print(json.dumps({"webhooks": f"http://127.0.0.1:{args.webhook_port}/", "smtp": f"127.0.0.1:{args.smtp_port}"}),
          flush=True)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        hooks.shutdown()
        smtp.stop()


if __name__ == "__main__":
    main()
