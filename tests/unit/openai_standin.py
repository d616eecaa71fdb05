"""A stand-in for vLLM's OpenAI-compatible server, shared by the unit tests that talk to one.

The server (a ThreadingHTTPServer on 127.0.0.1, in the test's process) answers POST /v1/completions the way vLLM
does: after `ttft_s` it streams one `data:` event per token every `token_interval_s`, then a usage event and
`data: [DONE]`. Each request is served in its own thread and sleeps independently, so concurrent streams
overlap the way batched decoding does. It refuses more than MAX_IN_FLIGHT requests at once and shuts itself
down after LIFETIME_S even if a test forgets to. With `tls` (a certificate and its key, see
`self_signed_certificate`) it serves https, as a router behind a private CA does.
"""

import json
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_IN_FLIGHT = 16
LIFETIME_S = 60
MODEL = "tiny-llama"
API_KEY = "s3cret-key"


class FakeVllm:
    def __init__(self, ttft_s=0.08, token_interval_s=0.01, api_key=None, usage=True, drop_after=None, text=" word",
                 tokens_per_word=None, tls=None):
        self.text = text
        # Set: the server counts each word as this many tokens and serves /tokenize, as vLLM does.
        self.tokens_per_word = tokens_per_word
        self.ttft_s = ttft_s
        self.token_interval_s = token_interval_s
        self.api_key = api_key
        self.usage = usage
        self.drop_after = drop_after
        self.requests = []
        self.lock = threading.Lock()
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass  # keep pytest output clean

            def send_json(self, status, body):
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):  # noqa: N802 - http.server's naming
                if not server.in_flight.acquire(blocking=False):
                    self.send_json(503, {"error": {"message": "too many requests in flight"}})
                    return
                try:
                    server.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test): nothing to answer
                finally:
                    server.in_flight.release()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:  # (certificate file, key file): serve https, as a router behind a private CA does
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base_url = "%s://127.0.0.1:%d/v1" % ("https" if tls else "http", self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(LIFETIME_S, self.stop)
        self.watchdog.daemon = True

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *_exc):
        self.stop()

    def stop(self):
        self.watchdog.cancel()
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request):
        body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
        with self.lock:
            self.requests.append({"path": request.path, "body": body,
                                  "authorization": request.headers.get("Authorization")})
        if self.api_key and request.headers.get("Authorization") != "Bearer %s" % self.api_key:
            request.send_json(401, {"error": "Unauthorized"})
            return
        if request.path == "/tokenize" and self.tokens_per_word:
            request.send_json(200, {"count": self.count(body["prompt"]), "max_model_len": 4096, "tokens": []})
            return
        if request.path != "/v1/completions":
            request.send_json(404, {"detail": "Not Found"})
            return
        if body["model"] != MODEL:
            request.send_json(404, {"object": "error", "message": "The model `%s` does not exist." % body["model"],
                                    "type": "NotFoundError", "code": 404})
            return
        request.send_response(200)
        request.send_header("Content-Type", "text/event-stream")
        request.end_headers()  # HTTP/1.0: the body ends when the connection closes
        time.sleep(self.ttft_s)
        prompt_tokens = self.count(body["prompt"])
        for index in range(body["max_tokens"]):
            if index:
                time.sleep(self.token_interval_s)
            if self.drop_after is not None and index == self.drop_after:
                return
            event = {"id": "cmpl-1", "object": "text_completion", "model": MODEL,
                     "choices": [{"index": 0, "text": self.text, "logprobs": None, "finish_reason": None}]}
            request.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if self.usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": body["max_tokens"],
                     "total_tokens": prompt_tokens + body["max_tokens"]}
            request.wfile.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        request.wfile.write(b"data: [DONE]\n\n")

    def count(self, prompt):
        return len(prompt.split()) * (self.tokens_per_word or 1)


def self_signed_certificate(directory):
    """(certificate, key) files of a self-signed certificate for 127.0.0.1, which is also its own CA file; None
    without the openssl command."""
    if shutil.which("openssl") is None:
        return None
    certificate, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    return str(certificate), str(key)
