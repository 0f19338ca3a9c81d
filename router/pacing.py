"""Periodic work of the running router: the GC's pacing over the connection
table, the event loop's lag, the drop counters turned into log lines, and
the snapshot the metrics are read from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from router.config import Config
from router.datapath import Datapath
from router.events import EventHub
from router.flowlog.exporter import FlowExporter
from router.ha.service import HaService
from router.portmap.service import PortmapService

GC_SLICE_MIN = 1024
GC_SLICE_MAX = 65536
GC_DELAY_MIN = 0.001
STATS_INTERVAL = 10.0


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Pacing:
    """The router's periodic tasks (a part of ``app.Router``)."""

    cfg: Config
    dp: Datapath
    log: Any
    events: EventHub
    gc_work: dict[str, int]
    loop_lag: float
    reloads: dict[str, int]
    helper_states: Callable[[], dict[str, dict[str, Any]]]  # the router's (app.py)
    portmap: PortmapService
    ha: HaService
    flowlog: FlowExporter
    _worker_errors: int

    async def _gc(self) -> None:
        """Sweeps the table a slice at a time so that, while few entries
        expire, a full pass takes ``conntrack.gc_interval`` seconds; while
        many expire (a quarter of a slice or more), slices come faster."""
        cap = self.dp.capacity
        slice_ = min(max(cap // 64, GC_SLICE_MIN), GC_SLICE_MAX, cap)
        ticks = max(1, -(-cap // slice_))
        delay = self.cfg.conntrack.gc_interval / ticks
        while True:
            await asyncio.sleep(delay)
            r = self.dp.sweep(now_ms(), slice_)
            self.gc_work["visited"] += r.visited
            self.gc_work["expired"] += r.expired
            self.gc_work["sweeps"] += 1
            base = self.cfg.conntrack.gc_interval / ticks
            share = r.expired / r.visited if r.visited else 0.0
            if share > 0.25:
                delay = max(GC_DELAY_MIN, delay / 2)
            elif share < 0.05:
                delay = min(base, delay * 1.5)
            if r.expired:
                self.log.debug("ct.swept", visited=r.visited, expired=r.expired,
                               entries=r.count, next_in=round(delay, 3))

    async def _lag(self) -> None:
        """How late timers run: the event loop's health, for the metrics."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.5)
            self.loop_lag = max(0.0, loop.time() - t0 - 0.5)

    def _snapshot(self) -> dict[str, Any]:
        """Everything the metrics show, read now (on the loop thread)."""
        return {
            "entries": self.dp.count(),
            "limit": self.dp.capacity,
            "counters": self.dp.counters(),
            "drops": self.dp.drops(),
            "interfaces": {i.name: self.dp.iface_stats(n)
                           for n, i in enumerate(self.cfg.interfaces)},
            "nat_mappings": self.dp.nat_mappings(),
            "gc": dict(self.gc_work),
            "loop_lag": self.loop_lag,
            "workers": self.dp.worker_stats(),
            "reloads": dict(self.reloads),
            "helpers": self.helper_states(),
            "portmap": self.portmap.status() if self.cfg.portmap.enabled else None,
            "ha": self.ha.status() if self.ha.enabled else None,
            "ipfix": self.flowlog.status() if self.flowlog.enabled else None,
            "events": {"listeners": len(self.events.listeners),
                       "delivered": self.events.delivered,
                       "missed": self.events.missed_total,
                       "lost": self.dp.events_lost()},
        }

    async def _stats(self) -> None:
        """Turns counter deltas into log events: C counts, Python logs."""
        last = self.dp.drops()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            cur = self.dp.drops()
            delta = {k: v - last[k] for k, v in cur.items() if v != last[k]}
            last = cur
            if delta:
                self.log.info("dp.drops", **delta)
            errors = sum(w["errors"] for w in self.dp.worker_stats())
            if errors > self._worker_errors:
                self.log.error("dp.queue_failed", queues_given_up=errors,
                               hint="a device's reads fail (was it deleted from "
                                    "outside?); restart the router to recreate it")
            self._worker_errors = errors
