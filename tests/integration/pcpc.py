"""A small PCP client (RFC 6887), written from the RFC for the tests and
independent of the router's own code: no PCP client is packaged in Debian.

    python pcpc.py map SERVER PROTO INT_PORT EXT_PORT LIFETIME [options]
        one MAP (or with --peer ADDR:PORT a PEER); prints a JSON answer:
        result, lifetime, epoch, external address and port
        options: --filter ADDR/LEN:PORT (repeatable), --prefer-failure,
                 --third-party ADDR, --nonce HEX, --from ADDR
    python pcpc.py keep SERVER PROTO INT_PORT LIFETIME SECONDS
        keeps a mapping for SECONDS as a client should: renews it at half
        its lifetime, listens on port 5350 for ANNOUNCE, and maps again when
        the server's epoch says it lost its state (RFC 6887 8.5); prints one
        JSON line per event ("mapped", "announce", "lost-state")
    python pcpc.py listen SECONDS
        prints what arrives on port 5350 (the all-hosts group joined) for
        SECONDS: NAT-PMP address announcements and PCP ANNOUNCEs, as JSON
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from ipaddress import IPv6Address, ip_address, ip_network

PORT, CLIENT_PORT = 5351, 5350


def mapped(addr: str) -> bytes:
    a = ip_address(addr)
    return (bytes(10) + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def unmapped(raw: bytes) -> str:
    a = IPv6Address(raw)
    return str(a.ipv4_mapped or a)


def own_address(server: str) -> str:
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, PORT))
    addr = s.getsockname()[0]
    s.close()
    return str(addr)


def request(opcode: int, lifetime: int, client: str, nonce: bytes, proto: int, int_port: int,
            ext_port: int, options: bytes, peer: tuple[str, int] | None) -> bytes:
    body = nonce + struct.pack("!B3xHH", proto, int_port, ext_port) + bytes(16)
    if peer is not None:
        body += struct.pack("!H2x", peer[1]) + mapped(peer[0])
    return struct.pack("!BBHI", 2, opcode, 0, lifetime) + mapped(client) + body + options


def option(code: int, data: bytes) -> bytes:
    pad = (4 - len(data) % 4) % 4
    return struct.pack("!BxH", code, len(data)) + data + bytes(pad)


def parse(data: bytes) -> dict[str, object]:
    ver, op, _, result, life, epoch = struct.unpack_from("!BBBBII", data)
    out: dict[str, object] = {"version": ver, "opcode": op & 0x7F, "result": result,
                              "lifetime": life, "epoch": epoch}
    if op & 0x7F in (1, 2) and len(data) >= 60:
        out["external_port"] = struct.unpack_from("!H", data, 42)[0]
        out["external"] = unmapped(data[44:60])
    return out


def exchange(server: str, msg: bytes) -> dict[str, object]:
    """Sends with RFC 6887 8.1.1's retransmission (from 3 s, doubling),
    capped at 4 tries."""
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    delay = 1.0
    try:
        for _ in range(4):
            s.sendto(msg, (server, PORT))
            s.settimeout(delay)
            try:
                data, _ = s.recvfrom(2048)
                return parse(data)
            except TimeoutError:
                delay *= 2
    finally:
        s.close()
    return {"result": "timeout"}


def cmd_map(a: list[str]) -> None:
    server, proto, int_port, ext_port, lifetime = a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4])
    opts, nonce, peer, client = b"", os.urandom(12), None, None
    i = 5
    while i < len(a):
        flag = a[i]
        if flag == "--prefer-failure":
            opts += option(2, b"")
            i += 1
            continue
        val = a[i + 1]
        if flag == "--filter":
            net, port = val.rsplit(":", 1)
            n = ip_network(net, strict=False)
            plen = n.prefixlen + (96 if n.version == 4 else 0)
            opts += option(3, struct.pack("!xBH", plen, int(port)) +
                           mapped(str(n.network_address)))
        elif flag == "--third-party":
            opts += option(1, mapped(val))
        elif flag == "--nonce":
            nonce = bytes.fromhex(val)
        elif flag == "--peer":
            host, port = val.rsplit(":", 1)
            peer = (host.strip("[]"), int(port))
        elif flag == "--from":
            client = val
        i += 2
    msg = request(2 if peer else 1, lifetime, client or own_address(server), nonce, proto,
                  int_port, ext_port, opts, peer)
    print(json.dumps(exchange(server, msg) | {"nonce": nonce.hex()}), flush=True)


def cmd_keep(a: list[str]) -> None:
    server, proto, int_port, lifetime, seconds = a[0], int(a[1]), int(a[2]), int(a[3]), \
        float(a[4])
    nonce = os.urandom(12)
    me = own_address(server)
    listen = announcements_socket()
    state: dict[str, float] = {}

    def do_map(why: str) -> None:
        r = exchange(server, request(1, lifetime, me, nonce, proto, int_port, 0, b"", None))
        if isinstance(r.get("epoch"), int):
            state.update(epoch=float(r["epoch"]), at=time.monotonic(),  # type: ignore[arg-type]
                         renew=time.monotonic() + float(r.get("lifetime", 0)) / 2)  # type: ignore[arg-type]
        print(json.dumps({"event": "mapped", "why": why, **r}), flush=True)

    do_map("start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        listen.settimeout(max(0.05, min(end, state.get("renew", end)) - time.monotonic()))
        try:
            data, src = listen.recvfrom(2048)
        except TimeoutError:
            if time.monotonic() >= state.get("renew", end):
                do_map("renew")
            continue
        if len(data) < 24 or data[0] != 2:
            continue  # NAT-PMP's announcements go to the same port
        r = parse(data)
        print(json.dumps({"event": "announce", "from": src[0], **r}), flush=True)
        epoch = float(r["epoch"])  # type: ignore[arg-type]
        elapsed = time.monotonic() - state.get("at", time.monotonic())
        expected = state.get("epoch", 0.0) + elapsed
        if epoch + max(2.0, elapsed / 16) < expected:  # the server forgot: map again
            print(json.dumps({"event": "lost-state", "epoch": epoch, "expected": expected}),
                  flush=True)
            do_map("lost-state")


def announcements_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", CLIENT_PORT))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("224.0.0.1") + socket.inet_aton("0.0.0.0"))
    return s


def cmd_listen(a: list[str]) -> None:
    s = announcements_socket()
    end = time.monotonic() + float(a[0])
    print(json.dumps({"event": "listening"}), flush=True)
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, src = s.recvfrom(2048)
        except TimeoutError:
            break
        if len(data) >= 12 and data[0] == 0:  # NAT-PMP (RFC 6886 3.2.1)
            _, op, result, epoch = struct.unpack_from("!BBHI", data)
            print(json.dumps({"event": "natpmp", "from": src[0], "opcode": op,
                              "result": result, "epoch": epoch,
                              "address": socket.inet_ntoa(data[8:12])}), flush=True)
        elif len(data) >= 24 and data[0] == 2:
            print(json.dumps({"event": "pcp", "from": src[0], **parse(data)}), flush=True)


if __name__ == "__main__":
    {"map": cmd_map, "keep": cmd_keep, "listen": cmd_listen}[sys.argv[1]](sys.argv[2:])
