"""A stand-in for vLLM's OpenAI server that streams at fixed delays, to measure a router's own overhead.

GET /health, GET /v1/models, POST /v1/completions and /v1/chat/completions (streamed or not), with a key, served
from one ThreadingHTTPServer. After --ttft seconds it streams one event per token every --interval seconds, as a
batching engine does for each of its sequences. Each request is counted in --log (one line per request), the way
the scenario counts requests in the real engine's log.

    python3 standin_engine.py --port 18001 --model tiny-llama --key upstream-key --log /tmp/a.log
"""

import argparse
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(args):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # As uvicorn does for vLLM: each token's event leaves at once instead of waiting on Nagle's algorithm.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *_args):
            pass

        def reply(self, status, body):
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def authorized(self):
            if self.headers.get("Authorization") == "Bearer " + args.key:
                return True
            self.reply(401, {"error": "Unauthorized"})
            return False

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                self.reply(200, {})
            elif not self.authorized():
                return
            elif path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": args.model, "object": "model", "created": 0,
                                                             "owned_by": "vllm", "root": args.model}]})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if not self.authorized():
                return
            path = self.path.rstrip("/")
            if path not in ("/v1/completions", "/v1/chat/completions"):
                self.reply(404, {"error": "not found"})
                return
            if body.get("model") != args.model:
                self.reply(404, {"object": "error", "message": "The model `%s` does not exist." % body.get("model"),
                                 "type": "NotFoundError", "code": 404})
                return
            with open(args.log, "a", encoding="utf-8") as log:
                log.write("%.3f %s\n" % (time.time(), path))
            chat = path.endswith("chat/completions")
            tokens = int(body.get("max_tokens") or 16)
            time.sleep(args.ttft)
            if not body.get("stream"):
                text = " word" * tokens
                choice = {"index": 0, "finish_reason": "length"}
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                self.reply(200, {"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": args.model, "choices": [choice],
                                 "usage": {"prompt_tokens": 8, "completion_tokens": tokens,
                                           "total_tokens": 8 + tokens}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index in range(tokens):
                if index:
                    time.sleep(args.interval)
                # Distinct tokens: LiteLLM cuts a stream that repeats one chunk many times.
                word = " word%d" % index
                choice = {"index": 0, "finish_reason": None}
                choice.update({"delta": {"content": word}} if chat else {"text": word})
                event = {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": int(time.time()), "model": args.model, "choices": [choice]}
                self.chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": int(time.time()), "model": args.model, "choices": [],
                         "usage": {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}}
                self.chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self.chunk(b"data: [DONE]\n\n")
            self.chunk(b"")

        def chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    # A client that closes its kept-alive connection is routine here, not an error worth a traceback.
    server.handle_error = lambda *_args: None
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
