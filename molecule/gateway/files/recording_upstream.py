"""A fixture standing in for the router (and for Open WebUI) behind the gateway: it records every request it gets.

The gateway is what is under test, so this server only answers enough of the OpenAI API to show what passed
through: GET /v1/models, POST /v1/chat/completions (streamed as server-sent events, one chunk every
STANDIN_CHUNK_DELAY_S, or whole), a websocket-style upgrade (101, then one line), and any other path with a small
JSON body. Each request is appended as one JSON line to STANDIN_RECORD_FILE: method, path, the Authorization,
X-Gateway-Client, Upgrade and Connection headers it arrived with.

Configured by its unit's environment: STANDIN_PORT, STANDIN_RECORD_FILE, STANDIN_CHUNK_DELAY_S (default 0.5).
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ["STANDIN_PORT"])
RECORD_FILE = os.environ["STANDIN_RECORD_FILE"]
CHUNK_DELAY_S = float(os.environ.get("STANDIN_CHUNK_DELAY_S", "0.5"))
MODEL = "standin-model"
RECORD_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass  # the record file is the log

    def record(self, body):
        entry = {"method": self.command, "path": self.path, "body_bytes": len(body)}
        for header in ("Authorization", "X-Gateway-Client", "Upgrade", "Connection"):
            entry[header.lower()] = self.headers.get(header)
        with RECORD_LOCK, open(RECORD_FILE, "a", encoding="utf-8") as record:
            record.write(json.dumps(entry) + "\n")

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.record(b"")
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(b"upgraded\n")
            self.wfile.flush()
            self.close_connection = True
        elif self.path.rstrip("/") == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "standin"}]})
        else:
            self.reply(200, {"standin": PORT, "path": self.path})

    def do_POST(self):  # noqa: N802
        body = self.read_body()
        self.record(body)
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": {"message": "not found"}})
            return
        request = json.loads(body or b"{}")
        words = ["one", "two", "three", "four"]
        if not request.get("stream"):
            self.reply(200, {"object": "chat.completion", "model": MODEL, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in words:
            event = {"object": "chat.completion.chunk", "model": MODEL,
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            self.send_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            time.sleep(CHUNK_DELAY_S)
        self.send_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def send_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
