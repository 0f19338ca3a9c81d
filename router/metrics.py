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
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router import log
from router.flowlog.metrics import ipfix_metrics
from router.ha.metrics import ha_metrics

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
                                     "Data plane worker threads (one per queue, while they run): "
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
        helpers = s.get("helpers") or {}
        if helpers:
            up = GaugeMetricFamily("router_helper_running",
                                   "Helper programs the router runs (the WAN's DHCP clients, "
                                   "dnsmasq): 1 while running.", labels=["helper"])
            restarts = CounterMetricFamily("router_helper_restarts",
                                           "Times a helper program exited and was started "
                                           "again.", labels=["helper"])
            for name, h in helpers.items():
                up.add_metric([name], 1 if h["running"] else 0)
                restarts.add_metric([name], h["restarts"])
            yield up
            yield restarts
        pm = s.get("portmap")
        if pm is not None:
            yield from _portmap_metrics(pm)
        ha = s.get("ha")
        if ha is not None:
            yield from ha_metrics(ha)
        flows = s.get("ipfix")
        if flows is not None:
            yield from ipfix_metrics(flows)
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


# Limits of the HTTP side: a scraper needs one connection, a few at most;
# anything beyond is refused at once, so that no number of local clients can
# take the router's descriptors (and with them the control socket).
MAX_CLIENTS = 16
REQUEST_DEADLINE = 5.0     # seconds for the request line and every header
RESPONSE_DEADLINE = 10.0   # seconds for a client to take the answer
MAX_REQUEST_BYTES = 8192   # request line and headers together
REFUSAL_LOG_INTERVAL = 10.0


class MetricsServer:
    """``GET /metrics`` on the event loop (the data plane may only be called
    from its thread).  Hand-written on asyncio rather than a server library:
    the maintained ones at hand (prometheus_client's threaded server, aiohttp)
    bound neither concurrent connections nor the whole time a client may take
    to send its headers, which is what a local user holding slow connections
    exploits, so they would need these same guards around them.  Every client
    has a deadline for its whole request and for taking the answer; at most
    MAX_CLIENTS are served at once, others are closed on arrival and counted,
    with a warning in the log at most every REFUSAL_LOG_INTERVAL seconds."""

    def __init__(self, listen: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.registry = CollectorRegistry()
        self.registry.register(Collector(snapshot))
        self._server: asyncio.AbstractServer | None = None
        self.address = ""
        self.clients = 0
        self.refused = 0
        self.timed_out = 0
        self._refusals_logged = 0
        self._last_log = -REFUSAL_LOG_INTERVAL
        self._log = log.get("metrics")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port,
                                                  limit=MAX_REQUEST_BYTES)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{sock[0]}:{sock[1]}"
        self._log.info("metrics.listening", address=self.address, max_clients=MAX_CLIENTS)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            self.refused += 1
            self._note_refusal(writer)
            writer.transport.abort()
            return
        self.clients += 1
        try:
            try:
                async with asyncio.timeout(REQUEST_DEADLINE):
                    request = await _read_request(reader)
            except TimeoutError:
                self.timed_out += 1
                return
            if request is None:
                body, head = b"request too large\n", "HTTP/1.1 431 Request Header Fields Too Large"
            elif (len(request) >= 2 and request[0] == "GET" and
                  request[1].split("?")[0] == "/metrics"):
                body = generate_latest(self.registry)
                head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                        "charset=utf-8")
            else:
                body, head = b"only /metrics is served here\n", "HTTP/1.1 404 Not Found"
            writer.write(f"{head}\r\nContent-Length: {len(body)}\r\nConnection: close"
                         "\r\n\r\n".encode() + body)
            async with asyncio.timeout(RESPONSE_DEADLINE):
                writer.close()  # after the answer is flushed
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            self.clients -= 1
            writer.transport.abort()  # whatever is left: free the descriptor now

    def _note_refusal(self, writer: asyncio.StreamWriter) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL:
            self._log.warning("metrics.refused", reason="too many clients",
                              max_clients=MAX_CLIENTS, refused=self.refused,
                              since_last=self.refused - self._refusals_logged,
                              peer=str(writer.get_extra_info("peername")))
            self._last_log = now
            self._refusals_logged = self.refused


async def _read_request(reader: asyncio.StreamReader) -> list[str] | None:
    """The request line's words, once the headers (which the exporter needs
    none of) have been read to the blank line; None if they exceed
    MAX_REQUEST_BYTES."""
    total = 0
    first: list[str] | None = None
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            return None
        total += len(line)
        if total > MAX_REQUEST_BYTES:
            return None
        if first is None:
            first = line.decode("latin-1").split()
            if not line:
                return first
            continue
        if not line.strip():
            return first


def _portmap_metrics(pm: dict[str, Any]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Mappings LAN hosts asked for (router/portmap/)."""
    now = GaugeMetricFamily("router_portmap_mappings", "Mappings LAN hosts hold now, by the "
                            "protocol that asked and family (6: pinholes).",
                            labels=["via", "family"])
    held: dict[tuple[str, str], int] = {}
    for m in pm["mappings"]:
        k = (m["via"], str(m["family"]))
        held[k] = held.get(k, 0) + 1
    for (via, family), n in sorted(held.items()):
        now.add_metric([via, family], n)
    yield now
    for what in ("granted", "refused"):
        c = CounterMetricFamily(f"router_portmap_{what}", f"Mapping requests {what}, by "
                                "protocol.", labels=["via"])
        for via, n in pm[what].items():
            c.add_metric([via], n)
        yield c
    yield CounterMetricFamily("router_portmap_expired", "Mappings that reached the end of "
                              "their lifetime.", value=pm["expired"])
    srv = CounterMetricFamily("router_portmap_requests_dropped", "PCP and NAT-PMP requests "
                              "dropped unanswered, by reason.", labels=["reason"])
    for reason in ("off_lan", "rate_limited", "errors"):
        srv.add_metric([reason], pm["server"].get(reason, 0))
    yield srv
