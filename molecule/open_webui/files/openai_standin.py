"""The part of vLLM's OpenAI-compatible API that Open WebUI reads to list models: GET /v1/models, with a key.

Configured by the environment of its systemd unit: STANDIN_MODEL (the model id), STANDIN_API_KEY, STANDIN_PORT.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = os.environ["STANDIN_MODEL"]
API_KEY = os.environ["STANDIN_API_KEY"]
PORT = int(os.environ.get("STANDIN_PORT", "8000"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") == "/health":
            self.reply(200, {})
        elif self.headers.get("Authorization") != "Bearer " + API_KEY:
            # vLLM started with --api-key answers 401 to a missing or wrong key.
            self.reply(401, {"error": "Unauthorized"})
        elif self.path.rstrip("/") == "/v1/models":
            self.reply(200, {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "vllm", "root": MODEL}],
            })
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
