# A webhook receiver for enrollq in Python with the standard library only:
# it verifies each delivery per the Standard Webhooks specification (HMAC-SHA256
# of "id.timestamp.body" with the base64-decoded key after whsec_), answers
# 2xx only to verified ones, and deduplicates on the event id.
#
#   WEBHOOK_SECRET=whsec_... PORT=8000 python3 receiver.py
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = base64.b64decode(os.environ["WEBHOOK_SECRET"].removeprefix("whsec_"))
TOLERANCE = 5 * 60  # seconds either way, as the spec's libraries allow


def verify(body: bytes, headers) -> dict:
    """Returns the event, or raises ValueError."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise ValueError("missing webhook headers")
    if abs(time.time() - int(timestamp)) > TOLERANCE:
        raise ValueError("timestamp too old or too new")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    # Several signatures during a rotation: "v1,<sig> v1,<sig>"; any may match.
    for sig in signatures.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise ValueError("no matching signature")


seen = set()  # use your database in production
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = verify(body, self.headers)  # over the raw body, before parsing
        except ValueError as err:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(f"rejected: {err}".encode())
            return
        with lock:  # the server is threaded
            if event["id"] not in seen:
                seen.add(event["id"])
                d = event["data"]
                if event["type"] == "enrollment.succeeded":
                    pass  # mark d["account_id"] enrolled
                elif event["type"] == "enrollment.failed" and d["action"] == "new_session_needed":
                    pass  # ask the user to redo Face Match
                print(json.dumps(event), flush=True)  # one line per new event
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # no access log on stderr
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Receiver)
print(f"listening on {server.server_address[1]}", file=sys.stderr, flush=True)
server.serve_forever()
