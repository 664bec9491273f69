"""A webhook receiver for tests/webhooks.rs, as a customer's notification
system would run one: it verifies every request with the Standard Webhooks
reference library (`standardwebhooks` from PyPI) and records what came.

    python3 tests/webhook_receiver.py SECRET LOG CONTROL

It listens on 127.0.0.1 (a free port, printed as "port N" on the first line
of stdout), appends one JSON line per request to LOG: {"webhook_id",
"event_id", "kind", "stop", "verified", "status", "at", "headers", "body"}, and answers as the JSON file
CONTROL says when the request arrives: {"status": 200, "delay_s": 0,
"retry_after": null}, missing keys taking those defaults. A request that
does not verify is answered 401 and recorded with verified false.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET, LOG, CONTROL = sys.argv[1], sys.argv[2], sys.argv[3]
HOOK = Webhook(SECRET)


def control():
    try:
        with open(CONTROL) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        arrived, c = time.time(), control()
        time.sleep(float(c.get("delay_s", 0)))
        record = {
            "webhook_id": self.headers.get("webhook-id"),
            "verified": True,
            "at": arrived,
            "headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("webhook-")},
            "body": body.decode("utf-8", "replace"),
        }
        try:
            payload = HOOK.verify(body, dict(self.headers))
            record["event_id"] = payload["data"]["id"]
            record["kind"] = payload["type"]
            record["stop"] = payload["data"]["stop"]
            status = int(c.get("status", 200))
        except (WebhookVerificationError, KeyError, ValueError):
            record["verified"] = False
            status = 401
        record["status"] = status
        with open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(status)
        if c.get("retry_after") is not None:
            self.send_header("Retry-After", str(c["retry_after"]))
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
