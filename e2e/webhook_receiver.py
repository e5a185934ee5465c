"""A local webhook receiver for the end-to-end tests: a threaded HTTP server on
127.0.0.1 that verifies every delivery with the reference `standardwebhooks` package
and keeps what it got. `fail_first=N` answers 503 to the first N requests (to show a
retry carries the same webhook-id)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


class Receiver:
    def __init__(self, fail_first=0):
        self.secret = None
        self.lock = threading.Lock()
        self.deliveries = []  # (webhook-id, payload dict, receipt time)
        self.requests = []  # every request: (webhook-id, status answered)
        self.failures = []  # verification failures
        self.fail_first = fail_first
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                at = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hid = self.headers.get("webhook-id", "")
                with rec.lock:
                    n = len(rec.requests)
                    status = 503 if n < rec.fail_first else 200
                    rec.requests.append((hid, status))
                if status == 200:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    try:
                        payload = Webhook(rec.secret).verify(body, headers)
                        with rec.lock:
                            rec.deliveries.append((hid, payload, at))
                    except Exception as e:  # recorded, and the test fails on it
                        with rec.lock:
                            rec.failures.append((hid, repr(e)))
                        status = 400
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self):
        with self.lock:
            return list(self.deliveries)

    def wait(self, pred, timeout, what):
        """Waits (bounded) until pred(verified deliveries) is true."""
        end = time.time() + timeout
        while time.time() < end:
            if pred(self.verified()):
                return self.verified()
            time.sleep(0.05)
        raise AssertionError(
            "timed out after %ss waiting for %s; got %s"
            % (timeout, what, json.dumps([(h, p.get("type")) for h, p, _ in self.verified()]))
        )

    def close(self):
        self.server.shutdown()
