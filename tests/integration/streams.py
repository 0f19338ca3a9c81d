"""Long-lived flows that measure their own interruptions, run inside the
high-availability test's namespaces.

    python streams.py tcp-serve ADDR PORT LIFETIME
        accepts connections; on each, sends a 100-byte tick every 10 ms and
        reads what comes; prints one JSON line per connection when the
        client closes it: {"peer", "sent", "error"}
    python streams.py tcp-watch DST PORT SECS
        connects, reads the ticks for SECS seconds, sending 100 bytes every
        10 ms itself; prints {"gap": longest silence (s), "received",
        "error", "local"}
    python streams.py udp-serve ADDR PORT LIFETIME
        answers each datagram with "IP:PORT" of its sender
    python streams.py udp-watch DST PORT SECS
        one socket, a datagram every 10 ms for SECS seconds; prints {"gap",
        "answers", "seen": [sender ports the server saw, in order, unique]}

Every process stops by itself; "error" is null unless the connection was
reset or closed early (what a failover must never cause).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time

TICK = 0.01
PAYLOAD = b"t" * 100


def tcp_serve(addr: str, port: int, lifetime: float) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(16)
    srv.settimeout(0.2)
    end = time.monotonic() + lifetime
    printing = threading.Lock()
    print("ready", flush=True)

    def serve(c: socket.socket, peer: str) -> None:
        sent, error = 0, None
        c.setblocking(False)
        try:
            while time.monotonic() < end:
                r, w, _ = select.select([c], [c], [], TICK)
                if r:
                    data = c.recv(65536)
                    if not data:
                        break  # the client's end: a clean one
                if w:
                    sent += c.send(PAYLOAD)
                time.sleep(TICK)
        except OSError as e:
            error = str(e)
        c.close()
        with printing:  # one whole line per connection: print() from two
            # threads at once can put both objects on one line
            print(json.dumps({"peer": peer, "sent": sent, "error": error}), flush=True)

    while time.monotonic() < end:
        try:
            c, a = srv.accept()
        except TimeoutError:
            continue
        threading.Thread(target=serve, args=(c, f"{a[0]}:{a[1]}"), daemon=True).start()
    time.sleep(0.5)


def tcp_watch(dst: str, port: int, secs: float) -> None:
    c = socket.create_connection((dst, port), timeout=5)
    host, lport = c.getsockname()
    local = f"{host}:{lport}"
    c.setblocking(False)
    end = time.monotonic() + secs
    last = time.monotonic()
    gap, received, error = 0.0, 0, None
    next_send = 0.0
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([c], [], [], TICK)
            now = time.monotonic()
            if r:
                data = c.recv(65536)
                if not data:
                    error = "closed by the server"
                    break
                received += len(data)
                gap = max(gap, now - last)
                last = now
            if now >= next_send:
                with contextlib.suppress(BlockingIOError):
                    c.send(PAYLOAD)
                next_send = now + TICK
        gap = max(gap, time.monotonic() - last)
        if error is None:  # a clean end: ours first, then the server's
            c.setblocking(True)
            c.settimeout(5)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
    except OSError as e:
        error = str(e)
    c.close()
    print(json.dumps({"gap": round(gap, 3), "received": received, "error": error,
                      "local": local}), flush=True)


def udp_serve(addr: str, port: int, lifetime: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(0.2)
    end = time.monotonic() + lifetime
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            _, a = s.recvfrom(2048)
        except TimeoutError:
            continue
        s.sendto(f"{a[0]}:{a[1]}".encode(), a)


def udp_watch(dst: str, port: int, secs: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, port))
    s.setblocking(False)
    end = time.monotonic() + secs
    last = time.monotonic()
    gap, answers, seen = 0.0, 0, []
    next_send = 0.0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_send:
            with contextlib.suppress(OSError):
                s.send(b"tick")
            next_send = now + TICK
        r, _, _ = select.select([s], [], [], TICK)
        if r:
            try:
                data = s.recv(2048)
            except OSError:
                continue
            now = time.monotonic()
            answers += 1
            gap = max(gap, now - last)
            last = now
            port_seen = data.decode().rsplit(":", 1)[-1]
            if not seen or seen[-1] != port_seen:
                seen.append(port_seen)
    gap = max(gap, time.monotonic() - last)
    print(json.dumps({"gap": round(gap, 3), "answers": answers, "seen": seen}), flush=True)


def main() -> None:
    mode, a, p, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    {"tcp-serve": tcp_serve, "tcp-watch": tcp_watch, "udp-serve": udp_serve,
     "udp-watch": udp_watch}[mode](a, p, t)


if __name__ == "__main__":
    main()
