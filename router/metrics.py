"""Prometheus metrics, served on the event loop.

The exporter reads the data plane's counters when it is scraped (nothing is
counted in Python), with the names node_exporter uses for Linux conntrack
(``node_nf_conntrack_entries``, ``node_nf_conntrack_stat_*``) so that existing
dashboards work, and ``router_*`` for the rest.  The HTTP server is a few lines
of asyncio on the loop thread, because the data plane may only be called from
there; it answers ``GET /metrics`` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router import log

# conntrack -S / node_exporter names, in their order.
CONNTRACK_STATS = ("found", "invalid", "ignore", "insert", "insert_failed", "drop",
                   "early_drop", "search_restart")


class Collector:
    """Turns a snapshot of the router into metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        c = s["counters"]
        yield GaugeMetricFamily("node_nf_conntrack_entries",
                                "Connections in the table.", value=s["entries"])
        yield GaugeMetricFamily("node_nf_conntrack_entries_limit",
                                "Size of the connection table.", value=s["limit"])
        for name in CONNTRACK_STATS:
            yield GaugeMetricFamily(f"node_nf_conntrack_stat_{name}",
                                    f"conntrack -S {name}.", value=c[name])
        drops = CounterMetricFamily("router_drops", "Packets dropped, by reason.",
                                    labels=["reason"])
        for reason, n in s["drops"].items():
            drops.add_metric([reason], n)
        yield drops
        for field, help_ in (("rx_packets", "Packets read."), ("rx_bytes", "Bytes read."),
                             ("rx_dropped", "Packets read and dropped."),
                             ("tx_packets", "Packets written."), ("tx_bytes", "Bytes written."),
                             ("tx_errors", "Writes that failed.")):
            m = CounterMetricFamily(f"router_interface_{field}", help_, labels=["interface"])
            for name, st in s["interfaces"].items():
                m.add_metric([name], st[field])
            yield m
        events = CounterMetricFamily("router_dataplane_events",
                                     "Data plane counters beyond conntrack -S.",
                                     labels=["counter"])
        for name, n in c.items():
            if name not in CONNTRACK_STATS:
                events.add_metric([name], n)
        yield events
        yield GaugeMetricFamily("router_nat_mappings",
                                "Endpoint-independent NAT mappings in use.",
                                value=s["nat_mappings"])
        gc = CounterMetricFamily("router_gc", "Garbage collection work.", labels=["what"])
        gc.add_metric(["slots_visited"], s["gc"]["visited"])
        gc.add_metric(["expired"], s["gc"]["expired"])
        gc.add_metric(["sweeps"], s["gc"]["sweeps"])
        yield gc
        yield GaugeMetricFamily("router_loop_lag_seconds",
                                "How late the event loop ran a timer, last check.",
                                value=s["loop_lag"])
        workers = s.get("workers") or []
        if workers:
            wk = CounterMetricFamily("router_worker",
                                     "Data plane worker threads (dataplane.queues > 1): "
                                     "packets read, batches, wakeups, queues given up, "
                                     "waits for the data plane's lock, seconds holding it "
                                     "and seconds busy.",
                                     labels=["worker", "what"])
            for k, w in enumerate(workers):
                for what in ("packets", "batches", "wakeups", "errors", "lock_waits"):
                    wk.add_metric([str(k), what], w[what])
                for what in ("locked", "busy"):
                    wk.add_metric([str(k), what + "_seconds"], w[what + "_ns"] / 1e9)
            yield wk
        reloads = CounterMetricFamily("router_reloads", "Config reloads.", labels=["result"])
        for result, n in s["reloads"].items():
            reloads.add_metric([result], n)
        yield reloads
        ev = s.get("events")
        if ev is not None:
            yield GaugeMetricFamily("router_event_listeners",
                                    "Clients streaming connection events.",
                                    value=ev["listeners"])
            yield CounterMetricFamily("router_events_delivered",
                                      "Connection events queued for listeners.",
                                      value=ev["delivered"])
            lost = CounterMetricFamily("router_events_lost",
                                       "Events lost: ring full in the data plane (by type), "
                                       "or drop-log samples over the rate (RATE_LIMITED).",
                                       labels=["type"])
            for t, n in ev["lost"].items():
                lost.add_metric([t], n)
            yield lost
            yield CounterMetricFamily("router_events_missed",
                                      "Events listeners missed because they fell behind.",
                                      value=ev["missed"])


async def _skip_headers(reader: asyncio.StreamReader) -> None:
    """Reads request headers up to the blank line; the exporter needs none."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line.strip():
            return


class MetricsServer:
    def __init__(self, listen: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.registry = CollectorRegistry()
        self.registry.register(Collector(snapshot))
        self._server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{sock[0]}:{sock[1]}"
        log.get("metrics").info("metrics.listening", address=self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            await _skip_headers(reader)
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = generate_latest(self.registry)
                head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                        f"charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n")
            else:
                body = b"only /metrics is served here\n"
                head = (f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
