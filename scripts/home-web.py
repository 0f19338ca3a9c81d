"""The simulated home's ISP web server (scripts/home-lab.sh): answers every
GET with the address it came from, so that a LAN machine sees which
address the router's NAT gave it.  Listens on both families, port argv[1]."""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        addr = self.client_address[0].removeprefix("::ffff:")
        body = f"you are {addr}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.client_address[0]} {format % args}", flush=True)


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


if __name__ == "__main__":
    DualStack(("::", int(sys.argv[1])), Handler).serve_forever()
