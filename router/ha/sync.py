"""The sync channel on the wire: a UDP socket on the sync link, the
channel's state machine, the two caches, and a sender paced by a byte
budget.

Everything here runs on the event loop and does bounded work per call: a
datagram is at most one MTU of messages; each tick sends at most the
bytes the rate allows (what is left waits, queued once per connection, so
the queue never outgrows the table).  Datagrams from any address but the
peer's are counted and dropped unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from router.config.model import Ha
from router.ha import wire
from router.ha.caches import External, Internal
from router.ha.channel import Channel, Key
from router.ha.wire import SyncCt

TICK = 0.01          # seconds between sends
BURST = 0.05         # seconds of rate the sender may save up
MAX_READ = 65535


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, sync: SyncLink) -> None:
        self.sync = sync

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sync.datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.sync.send_errors += 1


class SyncLink:
    def __init__(self, ha: Ha, log: Any) -> None:
        self.ha = ha
        self.log = log
        self.channel = Channel(ha.mode == "ftfw", ha.window, ha.resend_queue, ha.mtu)
        self.internal = Internal()
        self.external = External(ha.cache_max)
        self.channel.on_acked = self.internal.delivered
        self.transport: asyncio.DatagramTransport | None = None
        self.foreign = 0         # datagrams from another address than the peer's
        self.send_errors = 0
        self.expectations = 0    # expectation messages (no helpers here: ignored)
        self.last_data = 0.0     # monotonic time of the peer's last connection message
        self.last_alive = 0.0    # ... of its last ALIVE
        self.on_resync: Any = lambda: None  # the peer asks for the whole table
        self._tokens = ha.rate * BURST
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- life ------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ha.local, self.ha.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self.transport = transport
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- what the router tells it ------------------------------------------

    def changed(self, ct: SyncCt) -> None:
        self.channel.queue(self.internal.update(ct), time.monotonic())
        self._wake.set()

    def ended(self, ct: SyncCt) -> None:
        self.channel.queue(self.internal.destroy(ct), time.monotonic())
        self._wake.set()

    def bulk_part(self, cts: list[SyncCt]) -> None:
        """A chunk of a bulk read from the data plane in steps."""
        now = time.monotonic()
        for ct in cts:
            self.channel.queue(self.internal.update(ct), now)
        self._wake.set()

    def bulk_done(self, seen: set[Key]) -> None:
        """The end of a bulk: ``seen``, the keys it found (what else was live
        has ended meanwhile).  ALIVE follows the last message, which tells a
        peer of this router's kind that the bulk is over."""
        now = time.monotonic()
        for key in [k for k in self.internal.live if k not in seen]:
            self.channel.queue(self.internal.destroy(self.internal.live[key]), now)
        self._bulk_end = True
        self._wake.set()

    def ask_resync(self) -> None:
        self.channel.ask_resync()
        self._wake.set()

    # -- receiving -----------------------------------------------------------

    def datagram(self, data: bytes, addr: Any) -> None:
        if addr[0] != self.ha.peer:
            self.foreign += 1
            return
        msgs, errors = wire.split(data)
        for e in errors:
            self.channel.stats.malformed[e] += 1
        now = time.monotonic()
        for m in msgs:
            what = self.channel.receive(m, now)
            if m.is_ctl(wire.F_ALIVE):
                self.last_alive = now
            if what == "resync":
                self.on_resync()
            elif what == "data":
                self.last_data = now
                if m.ct is None:
                    self.expectations += 1
                else:
                    self.external.apply(m.type, m.ct)
        if self.channel.ctl_out:
            self._wake.set()

    # -- sending -------------------------------------------------------------

    _bulk_end = False

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose
            # a cancellation that comes as the event is set (and then stop()
            # would wait for this loop forever).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            self._tokens = min(self.ha.rate * BURST, self._tokens + (now - last) * self.ha.rate)
            last = now
            self.flush(now)
            if self.channel.pending:
                await asyncio.sleep(TICK)  # the budget is spent: pace

    def flush(self, now: float) -> None:
        if self._bulk_end and not self.channel.obj_out:
            self._bulk_end = False
            self.channel.alive()
        self.channel.tick(now)
        if self._tokens <= 0 or self.transport is None:
            return
        for d in self.channel.build(self._lookup, int(self._tokens), now):
            self._tokens -= len(d)
            try:
                self.transport.sendto(d, (self.ha.peer, self.ha.port))
            except OSError:
                self.send_errors += 1

    def _lookup(self, key: Key) -> tuple[int, SyncCt] | None:
        return self.internal.lookup(key)
