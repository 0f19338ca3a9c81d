"""UDP port 5351 of the router's own stack, where PCP and NAT-PMP requests
arrive from the LAN through the host link: one socket per family, each
request dispatched by its version byte (0: NAT-PMP, else PCP, RFC 6887
section 9), answered at once.  And the announcements both protocols send
to the LAN's all-hosts groups on port 5350.

Hostile LAN hosts are expected: a datagram from an address on no LAN link
is dropped, each source has a token bucket, and a handler's failure is
logged and counted, never raised into the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, cast

from router.config.model import PCP_CLIENT_PORT, PCP_PORT
from router.portmap import natpmp_wire
from router.portmap.natpmp import NatPmpServer
from router.portmap.pcp import PcpServer

RATE = 20.0      # requests per second per source, sustained
BURST = 40.0     # and in a burst
MAX_SOURCES = 4096
MAX_DATAGRAM = 1100
ALL_HOSTS4 = "224.0.0.1"   # RFC 6886 3.2.1, RFC 6887 14.1.3
ALL_HOSTS6 = "ff02::1"
# An announcement goes out 10 times, the interval doubling from 250 ms
# (RFC 6886 3.2.1; RFC 6887 14.1.3 leaves the schedule open).
ANNOUNCE_TIMES = 10
ANNOUNCE_FIRST = 0.25
IP_FREEBIND = 15  # <linux/in.h>; Python's socket module lacks it


NO_NETWORK = IPv4Network("0.0.0.0/32")


@dataclass(frozen=True)
class LanLink:
    """Where announcements go: a LAN link's kernel interface."""

    name: str                  # the kernel's name (the attached interface)
    address: IPv4Address       # the router's address there
    address6: IPv6Address | None = None
    network: IPv4Network = NO_NETWORK  # the link's IPv4 network


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, server: PortServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's own class

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        answer = self.server.answer(data, addr[0])
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        self.server.counts["send_errors"] += 1


class PortServer:
    def __init__(self, pcp: PcpServer | None, natpmp: NatPmpServer | None,
                 lans: Callable[[], list[IPv4Network | IPv6Network]], log: Any) -> None:
        self.pcp = pcp
        self.natpmp = natpmp
        self._lans = lans
        self._log = log
        self.counts = {"requests": 0, "off_lan": 0, "rate_limited": 0, "errors": 0,
                       "send_errors": 0}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._protos: list[_Proto] = []
        self._socks: list[socket.socket] = []
        self.addresses: list[IPv4Address | IPv6Address] = []
        self._announcing: asyncio.Task[None] | None = None
        self._telling: asyncio.Task[None] | None = None

    async def start(self, addresses: Sequence[IPv4Address | IPv6Address]) -> None:
        """Listens on the router's LAN ``addresses``: an answer must come
        from the address its request went to (NAT-PMP clients check), and a
        wildcard socket's answers would leave from the host link's."""
        loop = asyncio.get_running_loop()
        self.addresses = list(addresses)
        for a in addresses:
            family = socket.AF_INET6 if a.version == 6 else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                    # IPV6_FREEBIND: the address may still be in DAD.
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                s.bind((str(a), PCP_PORT))
                s.setblocking(False)
                _, proto = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=s)
            except OSError:
                s.close()
                raise
            self._protos.append(proto)
            self._socks.append(s)

    async def stop(self) -> None:
        for task in (self._announcing, self._telling):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for p in self._protos:
            if p.transport is not None:
                p.transport.close()
        self._protos, self._socks = [], []

    # -- requests ------------------------------------------------------------

    def answer(self, data: bytes, host: str) -> bytes | None:
        src = ip_address(host.split("%", 1)[0])
        if not any(src in n for n in self._lans()):
            self.counts["off_lan"] += 1
            return None
        if not self._allow(str(src)):
            self.counts["rate_limited"] += 1
            return None
        if not data or len(data) > MAX_DATAGRAM:
            return None
        self.counts["requests"] += 1
        try:
            if data[0] == natpmp_wire.VERSION:
                if self.natpmp is not None:
                    return self.natpmp.handle(data, src)
                return natpmp_wire.error_answer(data[1] if len(data) > 1 else 0,
                                                natpmp_wire.UNSUPP_VERSION, 0)
            if self.pcp is not None:
                return self.pcp.handle(data, src)
            return None  # PCP off: a PCP client falls back to NAT-PMP by itself
        except Exception as e:  # a bug must not end the service: logged, counted
            self.counts["errors"] += 1
            self._log.error("portmap.request_failed", client=str(src), error=repr(e))
            return None

    def _allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (BURST, now))
        tokens = min(BURST, tokens + (now - last) * RATE)
        if len(self._buckets) >= MAX_SOURCES and key not in self._buckets:
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 10}
            if len(self._buckets) >= MAX_SOURCES:
                return False
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True

    # -- announcements -------------------------------------------------------

    def announce(self, links: Sequence[LanLink], payloads: Callable[[], list[bytes]]) -> None:
        """Sends ``payloads()`` (made afresh each time: the epoch moves on)
        to the all-hosts groups of every LAN link, on the RFC's schedule; a
        new announcement replaces one still going on."""
        if self._announcing is not None:
            self._announcing.cancel()
        self._announcing = asyncio.create_task(self._announce(list(links), payloads))

    async def _announce(self, links: list[LanLink], payloads: Callable[[], list[bytes]]
                        ) -> None:
        delay = ANNOUNCE_FIRST
        for _ in range(ANNOUNCE_TIMES):
            for msg in payloads():
                for link in links:
                    self._send_multicast(link, msg)
            await asyncio.sleep(delay)
            delay *= 2

    def tell(self, messages: Sequence[tuple[IPv4Address | IPv6Address, bytes]],
             links: Sequence[LanLink]) -> None:
        """Sends each (client, message) to the client's port 5350 from the
        router's address on the client's link, three times (0, 0.25 and
        0.75 s: a datagram may be lost); replaces a telling still going on."""
        if self._telling is not None:
            self._telling.cancel()
        self._telling = asyncio.create_task(self._tell(list(messages), list(links)))

    async def _tell(self, messages: list[tuple[IPv4Address | IPv6Address, bytes]],
                    links: list[LanLink]) -> None:
        for delay in (0.25, 0.5, 0.0):
            for client, msg in messages:
                source = next((str(link.address) for link in links
                               if client.version == 4 and client in link.network), None)
                for s in self._socks:
                    if source is not None and s.getsockname()[0] == source:
                        with contextlib.suppress(OSError):
                            s.sendto(msg, (str(client), PCP_CLIENT_PORT))
            await asyncio.sleep(delay)

    def _send_multicast(self, link: LanLink, msg: bytes) -> None:
        for s in self._socks:
            try:
                if s.family == socket.AF_INET and s.getsockname()[0] == str(link.address):
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, link.address.packed)
                    s.sendto(msg, (ALL_HOSTS4, PCP_CLIENT_PORT))
                elif (s.family == socket.AF_INET6 and link.address6 is not None and
                      s.getsockname()[0] == str(link.address6) and
                      msg[0] != natpmp_wire.VERSION):  # NAT-PMP: IPv4 only
                    index = socket.if_nametoindex(link.name)
                    s.sendto(msg, (ALL_HOSTS6, PCP_CLIENT_PORT, 0, index))
            except OSError as e:
                self.counts["send_errors"] += 1
                self._log.debug("portmap.announce_failed", link=link.name, error=str(e))
