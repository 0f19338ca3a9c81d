"""The flow and NAT log: connection events exported as IPFIX over UDP.

A sink of the event hub (router/events.py): the data plane writes its
events into a ring and never waits; the hub hands each NEW and DESTROY to
``ct_event`` here, which turns the ones wanted (``events = "nat"``: the
translated connections) into records within a token bucket of ``rate``
records a second.  Every PACE seconds the queue goes out in messages of at
most ``mtu`` bytes from a non-blocking, connected UDP socket: a collector
that is down (ICMP port unreachable, no route) costs a counted error, never
a wait.  The templates go first and again every ``template_interval``
seconds, so that a collector started later learns them (RFC 7011 8.4).

Every record that does not leave is counted by why: over the rate, the
queue full, the send failed, or the event lost in the data plane's ring.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from router.config import Config
from router.config.ipfix import collector_address
from router.events import EventHub
from router.flowlog import ipfix
from router.native.names import DST_NAT, SRC_NAT
from router.native.records import CtEntry, Event

PACE = 0.1           # seconds between sends
DOWN_FOR = 10.0      # a failed send counts the collector down this long (UDP
                     # learns of it only on the send after the one refused)
QUEUE_MAX = 65536    # records waiting at most
OUTCOMES = ("sent", "rate_limited", "queue_full", "send_error")


def flow_record(ev: Event, now_ms: int) -> tuple[ipfix.FlowRecord, bool]:
    """The record of a NEW or DESTROY event, and whether it was translated."""
    e: CtEntry = ev.entry
    nat = bool(e.status & (SRC_NAT | DST_NAT))
    sport, dport, type_code = e.sport[0], e.dport[0], 0
    if e.proto in (1, 58):
        # ICMP: the identifier is what translation rewrites, so it stands
        # for the source port (RFC 8158's postNAPTSourceTransportPort the
        # translated one); type and code go in their own element.
        sport, dport, type_code = e.sport[0], 0, e.dport[0]
        post_sport, post_dport = e.sport[1], 0
    else:  # after translation: the reply tuple turned around
        post_sport, post_dport = e.dport[1], e.sport[1]
    create = ev.type == "NEW"
    event = (ipfix.NAT44_CREATE if create else ipfix.NAT44_DELETE) if nat else ipfix.NO_NAT
    start = now_ms - e.age_ms
    return ipfix.FlowRecord(
        family=e.family, proto=e.proto, src=e.src[0], sport=sport, dst=e.dst[0], dport=dport,
        post_src=e.dst[1], post_sport=post_sport, post_dst=e.src[1], post_dport=post_dport,
        nat_event=event, observed_ms=now_ms, start_ms=start,
        end_ms=start if create else now_ms,
        packets=(0, 0) if create else e.packets, octets=(0, 0) if create else e.bytes,
        icmp_type_code=type_code,
    ), nat


class FlowExporter:
    """The ``[ipfix]`` exporter: a CtSink while a collector is configured."""

    # A mapping's start and end: the data plane reports no UPDATE for it.
    ct_types = frozenset(("NEW", "DESTROY"))

    def __init__(self, cfg: Callable[[], Config], hub: EventHub, log: Any) -> None:
        self._cfg = cfg
        self.hub = hub
        self.log = log
        self.conf = cfg().ipfix
        self.queue: collections.deque[ipfix.FlowRecord] = collections.deque()
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.messages = 0
        self.lost = 0          # events the data plane's ring dropped
        self.sequence = 0      # data records sent (RFC 7011 3.1)
        self._tokens = 0.0
        self._refill = time.monotonic()
        self._templates_at = 0.0
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None    # the last send's failure
        self._failed_at = -DOWN_FOR

    @property
    def enabled(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        self.conf = self._cfg().ipfix
        if not self.conf.enabled:
            return
        addr, port = collector_address(None, self.conf.collector)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self._sock = socket.socket(fam, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.connect((addr, port))
        except OSError as e:  # no route yet: the sends count it, the next start retries
            self.error = e.strerror or str(e)
            self._failed_at = time.monotonic()
            self.log.warning("ipfix.connect_failed", collector=self.conf.collector,
                             error=self.error)
        self._tokens = float(self.conf.rate)
        self._templates_at = 0.0
        self.hub.add_sink(self)
        self._task = asyncio.create_task(self._run())
        self.log.info("ipfix.started", collector=self.conf.collector, events=self.conf.events,
                      rate=self.conf.rate)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.hub.remove_sink(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._flush()        # what is queued still goes
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.log.info("ipfix.stopped", **self.counts)

    async def reconfigure(self) -> None:
        if self._cfg().ipfix != self.conf or (self._task is None and self._cfg().ipfix.enabled):
            await self.stop()
            await self.start()

    # -- the hub's sink ------------------------------------------------------

    def ct_event(self, ev: Event) -> None:
        rec, nat = flow_record(ev, int(time.time() * 1000))
        if self.conf.events == "nat" and not nat:
            return
        now = time.monotonic()
        self._tokens = min(float(self.conf.rate),
                           self._tokens + (now - self._refill) * self.conf.rate)
        self._refill = now
        if self._tokens < 1.0:
            self.counts["rate_limited"] += 1
        elif len(self.queue) >= QUEUE_MAX:
            self.counts["queue_full"] += 1
        else:
            self._tokens -= 1.0
            self.queue.append(rec)

    def ct_lost(self, n: int) -> None:
        self.lost += n

    # -- sending -------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PACE)
            self._flush()

    def _send(self, data: bytes, records: int) -> None:
        assert self._sock is not None
        try:
            self._sock.send(data)
        except OSError as e:   # refused, unreachable, buffer full: counted, never waited on
            self.counts["send_error"] += records
            if not self.down:
                self.log.warning("ipfix.send_failed", collector=self.conf.collector,
                                 error=e.strerror or str(e))
            self.error = e.strerror or str(e)
            self._failed_at = time.monotonic()
            return
        self.messages += 1
        if records:
            self.counts["sent"] += records
            self.sequence += records

    @property
    def down(self) -> bool:
        """A send failed in the last DOWN_FOR seconds."""
        return time.monotonic() - self._failed_at < DOWN_FOR

    def _flush(self) -> None:
        if self._sock is None:
            return
        now = time.time()
        if time.monotonic() - self._templates_at >= self.conf.template_interval:
            self._templates_at = time.monotonic()
            self._send(ipfix.message([ipfix.template_set()], int(now), self.sequence,
                                     self.conf.domain), 0)
        records = list(self.queue)
        self.queue.clear()
        for group in ipfix.split_records(records, self.conf.mtu):
            sets = [ipfix.data_set(t, [r.encode() for r in group if r.template == t])
                    for t in ipfix.TEMPLATES if any(r.template == t for r in group)]
            self._send(ipfix.message(sets, int(now), self.sequence, self.conf.domain),
                       len(group))

    def status(self) -> dict[str, Any]:
        return {"collector": self.conf.collector, "events": self.conf.events,
                "records": dict(self.counts), "messages": self.messages,
                "events_lost": self.lost, "queued": len(self.queue),
                "error": self.error if self.down else None}
