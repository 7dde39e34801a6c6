#!/usr/bin/env python3
"""A small order service in Python, the upstream the idemproxy tests put
behind the proxy: it knows nothing of idempotency keys, and counts its side
effects so the tests can tell how often a request ran.

    python3 orders.py [PORT]     # prints "listening on http://127.0.0.1:PORT"

POST /orders?sleep=MS   creates an order (after sleeping MS ms): 201 JSON
                        {"order": N, "body": <request body>}
POST /fail              500, after counting a side effect
POST /close             counts a side effect, then closes the connection
                        without an answer
POST /big?n=BYTES       201 with a chunked body of BYTES bytes
POST /late?ms=MS        201 whose head is sent at once and body MS ms later
POST /cut               counts a side effect, sends a 201 head promising 100
                        bytes, 10 of them, then closes the connection
GET  /effects           200 JSON {"effects": N}: every side effect so far
GET  /headers           200 JSON of the request headers it got
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
effects = 0


def effect():
    global effects
    with lock:
        effects += 1
        return effects


class Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", "orders.py")
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n).decode("utf-8", "replace")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/effects":
            with lock:
                self.answer(200, {"effects": effects})
        elif url.path == "/headers":
            self.answer(200, {k.lower(): v for k, v in self.headers.items()})
        else:
            self.answer(404, {"error": "no such path"})

    def do_POST(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        body = self.body()
        if "sleep" in q:
            time.sleep(int(q["sleep"][0]) / 1000)
        if url.path == "/orders":
            self.answer(201, {"order": effect(), "body": body})
        elif url.path == "/fail":
            effect()
            self.answer(500, {"error": "failed on purpose"})
        elif url.path == "/close":
            effect()
            self.close_connection = True
            self.connection.shutdown(2)
        elif url.path == "/cut":
            effect()
            self.send_response(201)
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        elif url.path == "/late":
            body = json.dumps({"order": effect()}).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(int(q.get("ms", ["100"])[0]) / 1000)
            self.wfile.write(body)
        elif url.path == "/big":
            effect()
            n = int(q.get("n", ["0"])[0])
            self.send_response(201)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            left = n
            while left > 0:
                part = chunk[: min(left, len(chunk))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.answer(404, {"error": "no such path"})


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Orders)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
