"""Which of a few addresses are on this machine's interfaces, told as soon
as the kernel adds or removes one (rtnetlink's address groups).

keepalived adds the virtual addresses when it becomes MASTER and only then
runs its notify script: traffic for the moved addresses can arrive before
any script has run.  Watching the addresses themselves lets the router
commit the synced table the moment they arrive, with no process to start.
Reading address events needs no privilege.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterable
from ipaddress import ip_address
from typing import Any

from pyroute2 import IPRoute

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLMSG = struct.Struct("=IHHII")
IFADDRMSG = struct.Struct("=BBBBI")
RTATTR = struct.Struct("=HH")


def parse(data: bytes) -> list[tuple[bool, str]]:
    """(added, address) of each address message in one netlink read."""
    out: list[tuple[bool, str]] = []
    off = 0
    while len(data) - off >= NLMSG.size:
        n, kind, _f, _s, _p = NLMSG.unpack_from(data, off)
        if n < NLMSG.size or n > len(data) - off:
            break
        if kind in (RTM_NEWADDR, RTM_DELADDR) and n >= NLMSG.size + IFADDRMSG.size:
            family = data[off + NLMSG.size]
            size = 4 if family == socket.AF_INET else 16
            a = off + NLMSG.size + IFADDRMSG.size
            found: dict[int, bytes] = {}
            while off + n - a >= RTATTR.size:
                alen, atype = RTATTR.unpack_from(data, a)
                if alen < RTATTR.size or a + alen > off + n:
                    break
                if atype in (IFA_ADDRESS, IFA_LOCAL) and alen - RTATTR.size == size:
                    found[atype] = data[a + RTATTR.size:a + alen]
                a += (alen + 3) & ~3
            raw = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))
            if raw is not None:
                out.append((kind == RTM_NEWADDR, str(ip_address(raw))))
        off += (n + 3) & ~3
    return out


def present() -> set[str]:
    """Every address on this machine's interfaces now."""
    with IPRoute() as ipr:
        return {str(ip_address(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")))
                for a in ipr.get_addr()
                if a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")}


class AddressWatch:
    """Calls ``on_change(held)`` with whether any of ``addresses`` is here,
    each time that changes."""

    def __init__(self, addresses: Iterable[str], on_change: Callable[[bool], None],
                 log: Any) -> None:
        self.addresses = {str(ip_address(a)) for a in addresses}
        self.on_change = on_change
        self.log = log
        self.here: set[str] = set()
        self._sock: socket.socket | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return bool(self.here)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setblocking(False)
        self._sock = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable)
        # Subscribed first, then read: an address that comes in between is
        # seen twice, never missed.
        now = await loop.run_in_executor(None, present)
        self._set(self.addresses & now)

    def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        here = set(self.here)
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:  # ENOBUFS: events lost, read the truth again
                self.log.warning("ha.address_events_lost", reason=str(e))
                self._reading = asyncio.ensure_future(self._reread())
                break
            for added, addr in parse(data):
                if addr in self.addresses:
                    (here.add if added else here.discard)(addr)
        self._set(here)

    async def _reread(self) -> None:
        now = await asyncio.get_running_loop().run_in_executor(None, present)
        self._set(self.addresses & now)

    def _set(self, here: set[str]) -> None:
        was = self.held
        self.here = here
        if self.held != was:
            self.on_change(self.held)
