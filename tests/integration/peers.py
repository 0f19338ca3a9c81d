"""Small servers and clients run inside the test namespaces.

    python peers.py http ADDR PORT LIFETIME     answers "you are IP:PORT"
    python peers.py udp-echo ADDR PORT LIFETIME echoes "from IP:PORT <data>"
    python peers.py udp-send DST PORT DATA      prints the answer
    python peers.py raw IFACE HEX...            writes raw frames to a device
    python peers.py udp-count ADDR PORT SECS    prints datagrams and bytes received
    python peers.py udp-gso DST PORT N SIZE     one UDP_SEGMENT send of N x SIZE bytes
    python peers.py http-get DST PORT LPORT...  one GET per local port, prints each answer
    python peers.py tcp-sink ADDR PORT LIFETIME prints "PEER BYTES" for one connection
    python peers.py tcp-send DST PORT BYTES     sends that many bytes, then closes
    python peers.py scan DST PORTS SECS         TCP connect scan ("1-1024,8080"), prints
                                                the ports that accepted
    python peers.py tcp-echo ADDR PORT LIFETIME echoes on one connection
    python peers.py dns SERVER NAME             one A query over UDP, prints the
                                                addresses of the answer (or "timeout")
    python peers.py flood IFACE syn|udp DST PORT SECS  raw packets from random sources
                                                written into IFACE for SECS seconds;
                                                prints how many

Every server stops by itself after LIFETIME seconds.
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading


def _fam(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def http_server(addr: str, port: int, lifetime: float) -> None:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (f"you are {self.client_address[0]}:{self.client_address[1]} "
                    f"at {self.server.server_address[0]}\n").encode()
            if self.path.startswith("/big"):
                body += b"x" * 1_000_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = _fam(addr)

    srv = Server((addr, port), H)
    threading.Timer(lifetime, srv.shutdown).start()
    print("ready", flush=True)
    srv.serve_forever()


def udp_echo(addr: str, port: int, lifetime: float) -> None:
    s = socket.socket(_fam(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(lifetime)
    print("ready", flush=True)
    try:
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(f"from {peer[0]}:{peer[1]} ".encode() + data, peer)
    except TimeoutError:
        pass


def udp_send(dst: str, port: int, data: str, sport: int = 0) -> None:
    s = socket.socket(_fam(dst), socket.SOCK_DGRAM)
    if sport:
        s.bind(("::" if ":" in dst else "0.0.0.0", sport))
    s.settimeout(3)
    s.connect((dst, port))  # connected: an ICMP error surfaces as an exception
    s.send(data.encode())
    print(s.recv(65535).decode())


def raw(iface: str, frames: list[str]) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for f in frames:
        s.send(bytes.fromhex(f) if f else b"\x00")


def udp_count(addr: str, port: int, secs: float) -> None:
    s = socket.socket(_fam(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(secs)
    print("ready", flush=True)
    n = total = 0
    try:
        while True:
            data = s.recv(65535)
            n += 1
            total += len(data)
            if data.endswith(b"END"):
                break
    except TimeoutError:
        pass
    print(f"{n} {total}", flush=True)


def udp_gso(dst: str, port: int, n: int, size: int) -> None:
    udp_segment = 103  # linux/udp.h UDP_SEGMENT
    s = socket.socket(_fam(dst), socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_UDP, udp_segment, size)
    s.connect((dst, port))
    s.send(b"u" * (size * n - 3) + b"END")


def http_get(dst: str, port: int, lports: list[int]) -> None:
    for lport in lports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", lport))
        s.settimeout(5)
        s.connect((dst, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        print(lport, data.split(b"\r\n\r\n", 1)[1].decode().strip(), flush=True)


def _accept_one(addr: str, port: int, lifetime: float) -> tuple[socket.socket, str]:
    """Listens, says "ready", and returns the first connection and its peer."""
    s = socket.socket(_fam(addr))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen()
    s.settimeout(lifetime)
    print("ready", flush=True)
    c, peer = s.accept()
    c.settimeout(lifetime)
    return c, peer[0]


def tcp_sink(addr: str, port: int, lifetime: float) -> None:
    c, peer = _accept_one(addr, port, lifetime)
    n = 0
    while data := c.recv(1 << 16):
        n += len(data)
    print(f"{peer} {n}", flush=True)


def tcp_send(dst: str, port: int, n: int) -> None:
    s = socket.create_connection((dst, port), timeout=20)
    chunk = b"m" * 65536
    while n > 0:
        s.sendall(chunk[: min(n, len(chunk))])
        n -= min(n, len(chunk))
    s.close()


def scan(dst: str, spec: str, secs: float) -> None:
    import selectors
    import time

    ports: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        ports += range(int(lo), int(hi or lo) + 1)
    sel = selectors.DefaultSelector()
    socks = []
    for port in ports:
        s = socket.socket(_fam(dst))
        s.setblocking(False)
        s.connect_ex((dst, port))
        sel.register(s, selectors.EVENT_WRITE, port)
        socks.append(s)
    found = []
    deadline = time.monotonic() + secs
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            s = key.fileobj  # type: ignore[assignment]
            sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                found.append(key.data)
    for s in socks:
        s.close()
    print(" ".join(map(str, sorted(found))), flush=True)


def tcp_echo(addr: str, port: int, lifetime: float) -> None:
    c, _ = _accept_one(addr, port, lifetime)
    try:
        while data := c.recv(65536):
            c.sendall(data)
    except TimeoutError:
        pass


def dns(server: str, name: str) -> None:
    """An A query for ``name`` (RFC 1035 4.1), the answer's addresses."""
    import struct
    q = struct.pack("!HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.socket(_fam(server), socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(q, (server, 53))
        data = s.recv(4096)
    except TimeoutError:
        print("timeout")
        return
    count = struct.unpack("!H", data[6:8])[0]
    pos = len(q)  # the question, echoed
    out = []
    for _ in range(count):
        pos += 2 if data[pos] & 0xC0 == 0xC0 else data.index(b"\0", pos) + 1 - pos
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    print(" ".join(out))


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def flood(iface: str, kind: str, dst: str, port: int, secs: float) -> None:
    """SYNs or UDP datagrams from random sources (and ports) to DST:PORT,
    written straight into a TUN device, for SECS seconds (bounded)."""
    import os
    import random
    import struct
    import time

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    daddr = socket.inet_aton(dst)
    proto = 6 if kind == "syn" else 17
    rnd = random.Random(os.getpid())
    n = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        for _ in range(256):
            saddr = struct.pack("!I", rnd.randrange(0x0B000000, 0xDF000000))  # unicast
            sport = rnd.randrange(1024, 65536)
            if proto == 6:
                l4 = struct.pack("!HHIIBBHHH", sport, port, rnd.getrandbits(32), 0, 5 << 4,
                                 0x02, 65535, 0, 0)
            else:
                l4 = struct.pack("!HHHH", sport, port, 12, 0) + b"floo"
            pseudo = saddr + daddr + struct.pack("!BBH", 0, proto, len(l4))
            c = _csum(pseudo + l4)
            off = 16 if proto == 6 else 6
            l4 = l4[:off] + struct.pack("!H", c) + l4[off + 2:]
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                              saddr, daddr)
            hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
            try:
                s.send(hdr + l4)
                n += 1
            except OSError:
                time.sleep(0.001)  # the device queue is full: let the router drain it
    print(n, flush=True)


def main() -> None:
    mode, *a = sys.argv[1:]
    if mode == "http":
        http_server(a[0], int(a[1]), float(a[2]))
    elif mode == "udp-echo":
        udp_echo(a[0], int(a[1]), float(a[2]))
    elif mode == "udp-send":
        udp_send(a[0], int(a[1]), a[2], int(a[3]) if len(a) > 3 else 0)
    elif mode == "raw":
        raw(a[0], a[1:])
    elif mode == "udp-count":
        udp_count(a[0], int(a[1]), float(a[2]))
    elif mode == "udp-gso":
        udp_gso(a[0], int(a[1]), int(a[2]), int(a[3]))
    elif mode == "http-get":
        http_get(a[0], int(a[1]), [int(x) for x in a[2:]])
    elif mode == "tcp-sink":
        tcp_sink(a[0], int(a[1]), float(a[2]))
    elif mode == "tcp-send":
        tcp_send(a[0], int(a[1]), int(a[2]))
    elif mode == "scan":
        scan(a[0], a[1], float(a[2]))
    elif mode == "tcp-echo":
        tcp_echo(a[0], int(a[1]), float(a[2]))
    elif mode == "dns":
        dns(a[0], a[1])
    elif mode == "flood":
        flood(a[0], a[1], a[2], int(a[3]), float(a[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
