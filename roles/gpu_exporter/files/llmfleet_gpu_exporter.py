# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Serve the GPUs' NVML readings in Prometheus' text format on /metrics (standard library HTTP server).

The reading and rendering live in the collection's module_utils (gpu_metrics, nvml), which the role installs
beside this script; this file only parses arguments and answers HTTP.
"""

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_metrics import CONTENT_TYPE, MetricsSource


def log(line):
    sys.stderr.write("llmfleet-gpu-exporter: %s\n" % line)
    sys.stderr.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9477)
    parser.add_argument("--core-temp-limit", type=float, help="published as the core temperature limit")
    parser.add_argument("--memory-temp-limit", type=float, help="published as the memory temperature limit")
    parser.add_argument("--nvlink-expected", action="store_true", help="the host's profile requires NVLink")
    return parser.parse_args(argv)


def make_handler(source, lock):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?", 1)[0] == "/metrics":
                with lock:  # one NVML session: scrapes take turns
                    body = source.scrape().encode("utf-8")
                self.answer(200, CONTENT_TYPE, body)
            elif self.path == "/":
                self.answer(200, "text/plain; charset=utf-8", b"llmfleet GPU exporter: metrics on /metrics\n")
            else:
                self.answer(404, "text/plain; charset=utf-8", b"not found\n")

        def answer(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # no access log: Prometheus scrapes every few seconds
            pass

    return Handler


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = {"core_temp_limit_c": args.core_temp_limit, "memory_temp_limit_c": args.memory_temp_limit,
                "nvlink_expected": args.nvlink_expected}
    source = MetricsSource(settings, log)
    lock = threading.Lock()
    with lock:
        source.scrape()  # open NVML now, so a broken driver shows in the journal at start
    server = ThreadingHTTPServer((args.listen_address, args.port), make_handler(source, lock))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log("serving on http://%s:%d/metrics" % (args.listen_address, args.port))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with lock:
            source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
