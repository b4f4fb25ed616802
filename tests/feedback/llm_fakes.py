"""Misbehaving chat servers for failure tests: real HTTP on 127.0.0.1, each failing in one way."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler(mode: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            stream = bool(request.get("stream"))
            if mode == "slow":
                time.sleep(3)
                self._send(200, b"{}")
            elif mode == "garbage":
                self._send(200, b"<html>not json</html>", "text/html")
            elif mode == "unauthorized":
                self._send(401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode())
            elif mode == "names" and not stream:
                body = {"choices": [{"message": {"role": "assistant", "content": "As ChatGPT, I think so."},
                                     "finish_reason": "stop"}], "model": "x"}
                self._send(200, json.dumps(body).encode())
            elif mode == "truncated" and stream:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = {"choices": [{"index": 0, "delta": {"content": "Half an ans"}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True
            elif mode == "echo-key":
                self._send(200, json.dumps({"choices": [{"message": {"content": self.headers.get("Authorization", "")},
                                                         "finish_reason": "stop"}]}).encode())
            else:
                self._send(500, b'{"error": "boom"}')

    return Handler


@contextmanager
def fake_server(mode: str):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
