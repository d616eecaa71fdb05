"""A client for the gateway scenario's checks, run on the target: one request, printed back as JSON.

    gateway_probe.py URL [--cacert FILE --servername NAME] [--plain] [--header 'Name: value'] [--data JSON]
                     [--upgrade]

It connects to URL's host and port; with --cacert it speaks TLS and verifies the certificate for --servername
(so the check proves the certificate's names, not only its signature); --plain sends plain HTTP whatever the
scheme. The output: status, headers, body, and for each body line the seconds since the request was sent, which
shows whether a stream arrived piece by piece. --upgrade sends a websocket handshake and reads what follows the 101.
"""

import argparse
import http.client
import json
import socket
import ssl
import time
from urllib.parse import urlsplit


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the certificate for a name (as curl --resolve does)."""

    def __init__(self, address, port, servername, **kwargs):
        super().__init__(servername, port, **kwargs)
        self.address = address

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def tls_context(cacert):
    context = ssl.create_default_context(cafile=cacert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--cacert")
    parser.add_argument("--servername")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--data")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args()
    url = urlsplit(args.url)
    headers = dict(header.split(": ", 1) for header in args.header)
    headers["Host"] = args.servername or url.hostname
    if args.upgrade:
        print(json.dumps(upgrade(url, args, headers)))
        return
    if args.plain or not args.cacert:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
    else:
        connection = NamedHTTPSConnection(url.hostname, url.port, args.servername or url.hostname,
                                          timeout=args.timeout, context=tls_context(args.cacert))
    path = url.path + ("?" + url.query if url.query else "")
    started = time.monotonic()
    connection.request("POST" if args.data else "GET", path, body=args.data, headers=headers)
    response = connection.getresponse()
    lines, line_times = [], []
    while True:
        line = response.readline()
        if not line:
            break
        lines.append(line.decode(errors="replace"))
        line_times.append(round(time.monotonic() - started, 3))
    print(json.dumps({"status": response.status, "headers": {k.lower(): v for k, v in response.getheaders()},
                      "body": "".join(lines), "line_times": line_times}))


def upgrade(url, args, headers):
    raw = socket.create_connection((url.hostname, url.port), timeout=args.timeout)
    stream = tls_context(args.cacert).wrap_socket(raw, server_hostname=args.servername)
    headers.update({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    request = "GET %s HTTP/1.1\r\n%s\r\n" % (url.path or "/", "".join("%s: %s\r\n" % item for item in headers.items()))
    stream.sendall(request.encode())
    received = b""
    while b"upgraded\n" not in received:
        chunk = stream.recv(4096)
        if not chunk:
            break
        received += chunk
    stream.close()
    return {"received": received.decode(errors="replace")}


if __name__ == "__main__":
    main()
