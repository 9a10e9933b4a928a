"""A GRIP backend for tests/grip.rs, written as a gripcontrol user would write one.

Usage: grip_backend.py GRIP_KEY_FILE CONTROL_PORT PUBLISH_KEY_FILE
Prints "listening PORT" once it accepts connections on 127.0.0.1.

  GET /response?ch=C&timeout=S  a long-poll (create_hold_response, a grip-instruct body);
                                its own answer is "fallback\n" with X-Backend: fallback
  GET /stream?ch=C&ka=S         a stream hold made with Grip-* headers; body "start\n";
                                ":idle\n" after S idle seconds (30 by default)
  GET /bad?ch=C                 instructions that cannot be followed (Grip-Hold: forever)
  POST /publish?ch=C&kind=response|stream&n=N   publishes with GripPubControl to the
                                control listener: one http-response, or N http-stream
                                messages "message 1\n" ... in order
Requests without a valid Grip-Sig are not held: "not held: <why>\n".
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from gripcontrol import (
    GripPubControl,
    HttpStreamFormat,
    Response,
    create_grip_channel_header,
    create_hold_response,
    validate_sig,
)
from pubcontrol import Item

GRIP_KEY = open(sys.argv[1], "rb").read().strip()
CONTROL = {
    "control_uri": "http://127.0.0.1:%s" % sys.argv[2],
    "control_iss": "grip-test",
    "key": open(sys.argv[3], "rb").read().strip(),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body, headers=()):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        sig = self.headers.get("Grip-Sig")
        if sig is None:
            return self.answer(200, "not held: no Grip-Sig\n")
        if not validate_sig(sig, GRIP_KEY):
            return self.answer(200, "not held: invalid Grip-Sig\n")
        channel = query["ch"]
        if url.path == "/response":
            fallback = Response(code=200, headers={"X-Backend": "fallback"}, body="fallback\n")
            instruct = create_hold_response(channel, fallback, int(query.get("timeout", "55")))
            return self.answer(200, instruct, [("Content-Type", "application/grip-instruct")])
        if url.path == "/stream":
            return self.answer(
                200,
                "start\n",
                [
                    ("Content-Type", "text/plain"),
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", create_grip_channel_header(channel)),
                    ("Grip-Keep-Alive", ":idle\\n; format=cstring; timeout=%s" % query.get("ka", "30")),
                ],
            )
        if url.path == "/bad":
            return self.answer(200, "?\n", [("Grip-Hold", "forever"), ("Grip-Channel", channel)])
        self.answer(404, "no such path\n")

    def do_POST(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        publisher = GripPubControl(CONTROL)
        channel = query["ch"]
        if query["kind"] == "response":
            publisher.publish_http_response(channel, "published answer\n", blocking=True)
        else:
            for n in range(1, int(query["n"]) + 1):
                publisher.publish(channel, Item(HttpStreamFormat("message %d\n" % n)), blocking=True)
        self.answer(200, "published\n")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening %d" % server.server_address[1], flush=True)
server.serve_forever()
