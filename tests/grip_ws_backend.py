"""A WebSocket-over-HTTP backend for tests/websocket_gateway.rs, written as a
gripcontrol user would write one (WebSocketEvent, websocket_control_message).

Usage: grip_ws_backend.py CONTROL_PORT
Prints "listening PORT" once it accepts connections on 127.0.0.1.

  OPEN             accepted; the socket is subscribed to channel "room" and told
                   "welcome <Connection-Id present?>"
  TEXT "publish X" publishes X on "room" with GripPubControl (to the control listener)
                   and answers "published"
  TEXT other       answered "echo <text>"
  BINARY           sent back as it is
  TEXT "closes"    answered "closes: " and the sockets' ends told so far, sorted, each
                   "CLOSE <code> <known>" or "DISCONNECT <known>" (known: whether its
                   Connection-Id is one an OPEN came with), comma-separated
  TEXT "heard"      answered "heard: " and every text heard so far, comma-separated
  TEXT "unsubscribe" unsubscribes the socket from "room"; answered "unsubscribed"
  TEXT "detach"    detaches the socket; answered "detached"
  TEXT "keep-alive" asks for a keep-alive "ka" after 1 s of idleness; answered
                   "keeping alive"
  CLOSE/DISCONNECT recorded for "closes"; answered with no events
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gripcontrol import (
    GripPubControl,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    websocket_control_message,
)
from pubcontrol import Item

CONTROL = {"control_uri": "http://127.0.0.1:%s" % sys.argv[1]}
OPENED = set()
ENDS = []
HEARD = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type") != "application/websocket-events":
            return self.answer(400, b"not WebSocket-over-HTTP\n", "text/plain")
        out = []
        cid = self.headers.get("Connection-Id")
        known = "known" if cid in OPENED else "unknown"
        for event in decode_websocket_events(body):
            kind = event.type
            if kind == "OPEN":
                OPENED.add(cid)
                out.append(WebSocketEvent("OPEN"))
                subscribe = websocket_control_message("subscribe", {"channel": "room"})
                out.append(WebSocketEvent("TEXT", "c:" + subscribe))
                has_id = "yes" if self.headers.get("Connection-Id") else "no"
                out.append(WebSocketEvent("TEXT", "welcome " + has_id))
            elif kind == "TEXT":
                text = event.content.decode("utf-8")
                HEARD.append(text)
                if text == "closes":
                    out.append(WebSocketEvent("TEXT", "closes: " + ", ".join(sorted(ENDS))))
                elif text == "heard":
                    out.append(WebSocketEvent("TEXT", "heard: " + ", ".join(HEARD)))
                elif text == "unsubscribe":
                    control = websocket_control_message("unsubscribe", {"channel": "room"})
                    out.append(WebSocketEvent("TEXT", "c:" + control))
                    out.append(WebSocketEvent("TEXT", "unsubscribed"))
                elif text == "detach":
                    out.append(WebSocketEvent("TEXT", "c:" + websocket_control_message("detach")))
                    out.append(WebSocketEvent("TEXT", "detached"))
                elif text == "keep-alive":
                    control = websocket_control_message(
                        "keep-alive", {"content": "ka", "timeout": 1}
                    )
                    out.append(WebSocketEvent("TEXT", "c:" + control))
                    out.append(WebSocketEvent("TEXT", "keeping alive"))
                elif text.startswith("publish "):
                    GripPubControl(CONTROL).publish(
                        "room", Item(WebSocketMessageFormat(text[len("publish "):]))
                    )
                    out.append(WebSocketEvent("TEXT", "published"))
                else:
                    out.append(WebSocketEvent("TEXT", "echo " + text))
            elif kind == "CLOSE":
                code = int.from_bytes(event.content[:2], "big") if event.content else "none"
                ENDS.append("CLOSE %s %s" % (code, known))
            elif kind == "DISCONNECT":
                ENDS.append("DISCONNECT %s" % known)
            elif kind == "BINARY":
                out.append(WebSocketEvent("BINARY", event.content))
        self.answer(200, encode_websocket_events(out), "application/websocket-events")

    def do_GET(self):
        self.answer(404, b"WebSocket only\n", "text/plain")

    def answer(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening %d" % server.server_address[1], flush=True)
server.serve_forever()
