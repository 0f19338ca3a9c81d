"""Events from the data plane: connection events for ``routerctl conntrack
events``, sampled drops for the log, and packet capture.

The C core writes events into a ring and never waits; ``EventHub`` drains it
a few times a second while anything listens.  Each listener has its own
bounded queue: a slow or stuck reader only loses its own events and is told
how many (``{"type": "MISSED", "count": N}``); the data plane and the other
listeners go on.  Connection events are switched on only while someone
listens, as Linux allocates its event extension only for a listener.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from router.conntrack_text import entry_json, proto_name
from router.datapath import Datapath
from router.native.records import Event

DRAIN_INTERVAL = 0.05
QUEUE_MAX = 10000
CT_EVENT_TYPES = ("NEW", "UPDATE", "DESTROY")
LINKTYPE_RAW = 101   # pcap's link type of a raw IPv4 or IPv6 packet, as a TUN carries it
TCP_FLAG_NAMES = "FSRPAUEC"


def tcp_flags_text(flags: int) -> str:
    return "".join(n for i, n in enumerate(TCP_FLAG_NAMES) if flags >> i & 1)


class Listener:
    """One ``conntrack events`` client: a bounded queue and a miss count."""

    def __init__(self, types: frozenset[str], match: Callable[[Mapping[str, Any]], bool]) -> None:
        self.types = types
        self.match = match
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.missed = 0        # not yet reported to the client
        self.missed_ever = 0
        self.ready = asyncio.Event()

    def offer(self, msg: dict[str, Any]) -> None:
        if len(self.queue) >= QUEUE_MAX:
            self.missed += 1
            self.missed_ever += 1
        else:
            self.queue.append(msg)
        self.ready.set()

    def lose(self, n: int) -> None:
        self.missed += n
        self.missed_ever += n
        self.ready.set()

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.missed:
                n, self.missed = self.missed, 0
                yield {"type": "MISSED", "count": n}
            while self.queue:
                yield self.queue.popleft()


class CtSink(Protocol):
    """A part of the router that takes connection events as they are
    (high availability's sync, the flow log), not as messages for a client;
    ``ct_types`` are the types it wants (the data plane reports no other)."""

    ct_types: frozenset[str]

    def ct_event(self, ev: Event) -> None: ...

    def ct_lost(self, n: int) -> None: ...


class EventHub:
    def __init__(self, dp: Datapath, log: Any, iface_names: Callable[[], list[str]],
                 rule_text: Callable[[int], str]) -> None:
        self.dp = dp
        self.log = log
        self.iface_names = iface_names
        self.rule_text = rule_text
        self.listeners: set[Listener] = set()
        self.sinks: list[CtSink] = []
        self.log_drops: tuple[str, ...] = ()
        self.log_rate = 10
        self._wake = asyncio.Event()
        self._lost = dp.events_lost()
        self._suppressed = 0
        self._suppressed_logged = time.monotonic()
        self.delivered = 0
        self._missed_gone = 0  # by listeners that left

    # -- configuration ---------------------------------------------------

    def configure(self, log_drops: tuple[str, ...], log_rate: int) -> None:
        self.log_drops, self.log_rate = log_drops, log_rate
        self._apply()

    def _apply(self) -> None:
        self.dp.enable_events(ct=self._ct_types(), drop_reasons=self.log_drops,
                              drop_rate=self.log_rate)
        self._wake.set()

    def _ct_types(self) -> frozenset[str]:
        """The connection event types someone wants, and only those: a
        flow log alone (NEW, DESTROY) costs no UPDATE per state change."""
        want: set[str] = set()
        for sink in self.sinks:
            want |= sink.ct_types
        for li in self.listeners:
            want |= li.types
        return frozenset(want & set(CT_EVENT_TYPES))

    @property
    def active(self) -> bool:
        return bool(self.listeners or self.log_drops or self.sinks)

    def add_sink(self, sink: CtSink) -> None:
        before = self._ct_types()
        self.sinks.append(sink)
        if self._ct_types() != before:
            self._apply()

    def remove_sink(self, sink: CtSink) -> None:
        if sink in self.sinks:
            before = self._ct_types()
            self.sinks.remove(sink)
            if self._ct_types() != before:
                self._apply()

    def subscribe(self, listener: Listener) -> None:
        before = self._ct_types()
        self.listeners.add(listener)
        if self._ct_types() != before:
            self._apply()  # events on, ring empty: nothing old leaks in

    @property
    def missed_total(self) -> int:
        return self._missed_gone + sum(li.missed_ever for li in self.listeners)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self.listeners:
            self._missed_gone += listener.missed_ever
        before = self._ct_types()
        self.listeners.discard(listener)
        if self._ct_types() != before:
            self._apply()

    def publish(self, msg: Mapping[str, Any]) -> None:
        """An event of the control plane's own (``type``: PORTMAP, say), for
        the listeners that asked for its type."""
        out = {"time": round(time.time(), 6), **msg}
        for li in self.listeners:
            if out["type"] in li.types:
                li.offer(out)
                self.delivered += 1

    # -- draining --------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self.active:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(DRAIN_INTERVAL)
            self.drain()

    def drain(self) -> None:
        while evs := self.dp.read_events(4096):
            for ev in evs:
                if ev.type == "DROP":
                    self._log_drop(ev)
                else:
                    self._fan_out(ev)
            if len(evs) < 4096:
                break
        lost = self.dp.events_lost()
        ct_lost = sum(lost[t] - self._lost[t] for t in CT_EVENT_TYPES)
        self._suppressed += (lost["RATE_LIMITED"] - self._lost["RATE_LIMITED"]
                             + lost["DROP"] - self._lost["DROP"])
        self._lost = lost
        if ct_lost:
            for li in self.listeners:
                li.lose(ct_lost)
            for sink in self.sinks:
                sink.ct_lost(ct_lost)
        now = time.monotonic()
        if self._suppressed and now - self._suppressed_logged >= 1.0:
            self.log.info("packet.drop_log_suppressed", count=self._suppressed,
                          log_rate=self.log_rate)
            self._suppressed = 0
            self._suppressed_logged = now

    def _fan_out(self, ev: Event) -> None:
        for sink in self.sinks:
            if ev.type in sink.ct_types:
                sink.ct_event(ev)
        if not self.listeners:
            return
        j = entry_json(ev.entry)
        msg = {"type": ev.type, "time": round(time.time(), 6), **j}
        for li in self.listeners:
            if ev.type in li.types and li.match(j):
                li.offer(msg)
                self.delivered += 1

    def _log_drop(self, ev: Event) -> None:
        e = ev.entry
        names = self.iface_names()
        fields: dict[str, Any] = {
            "reason": ev.reason,
            "interface": names[ev.iface] if 0 <= ev.iface < len(names) else ev.iface,
            "proto": proto_name(e.proto) if e.family else "unknown",
        }
        if e.family:
            fields |= {"src": e.src[0], "dst": e.dst[0]}
        if e.proto in (6, 17):
            fields |= {"sport": e.sport[0], "dport": e.dport[0]}
        elif e.proto == 1:
            fields |= {"icmp_type": e.dport[0] >> 8, "icmp_code": e.dport[0] & 0xFF}
        if e.proto == 6:
            fields["flags"] = tcp_flags_text(ev.tcp_flags)
        if ev.rule >= 0:
            fields |= {"rule": ev.rule, "rule_text": self.rule_text(ev.rule)}
        self.log.info("packet.dropped", **fields)


def stream(hub: EventHub, types: frozenset[str]) -> AsyncIterator[dict[str, Any]]:
    """Every event of ``types`` as it comes (a control command's stream of
    the control plane's own events: PORTMAP, HA), subscribed while read."""
    listener = Listener(types, lambda _j: True)

    async def messages() -> AsyncIterator[dict[str, Any]]:
        hub.subscribe(listener)
        try:
            async for msg in listener.messages():
                yield msg
        finally:
            hub.unsubscribe(listener)
    return messages()


async def capture(dp: Datapath, ifaces: list[int], count: int, duration: float,
                  snaplen: int, filt: str = "") -> AsyncIterator[dict[str, Any]]:
    """Captured packets of interfaces ``ifaces`` as messages, until
    ``count`` packets (0: any number) or ``duration`` seconds (0: until the
    reader leaves).  ``filt``: a tcpdump expression the data plane runs
    before copying a packet (CaptureFilterError if libpcap refuses it,
    raised before the first message).  The caller must allow only one
    capture at a time."""
    dp.capture_start(ifaces, snaplen=snaplen, filt=filt)
    lost0, filtered0 = dp.capture_lost(), dp.capture_filtered()
    deadline = time.monotonic() + duration if duration > 0 else None
    n = 0
    try:
        yield {"type": "START", "linktype": LINKTYPE_RAW, "snaplen": snaplen}
        while (deadline is None or time.monotonic() < deadline) and (count == 0 or n < count):
            await asyncio.sleep(0.02)
            while batch := dp.capture_read():
                for c in batch:
                    yield {"type": "PACKET", "ts_us": c.ts_us, "len": c.length,
                           "iface": ifaces.index(c.iface) if c.iface in ifaces else 0,
                           "dir": "out" if c.outgoing else "in",
                           "data": base64.b64encode(c.data).decode()}
                    n += 1
                    if count and n >= count:
                        break
                if count and n >= count:
                    break
        yield {"type": "END", "packets": n, "lost": dp.capture_lost() - lost0,
               "filtered": dp.capture_filtered() - filtered0}
    finally:
        dp.capture_stop()
