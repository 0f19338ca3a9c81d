"""The pair's metrics, from ``HaService.status()`` (router/metrics.py
yields them with the rest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

ROLES = ("standby", "active")


def ha_metrics(st: dict[str, Any]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    role = GaugeMetricFamily("router_ha_role", "1 for this router's role in the pair.",
                             labels=["role"])
    for r in ROLES:
        role.add_metric([r], 1 if st["role"] == r else 0)
    yield role
    yield GaugeMetricFamily("router_ha_ready", "1 once a starting router has the peer's "
                            "table (what track_file tells keepalived).",
                            value=1 if st["ready"] else 0)
    yield GaugeMetricFamily("router_ha_sync_up", "1 while the sync link's socket is open.",
                            value=1 if st["sync"] == "up" else 0)
    if st["sync"] != "up":
        return
    if st["last_heard"] is not None:
        yield GaugeMetricFamily("router_ha_peer_silence_seconds", "Seconds since the peer's "
                                "last message.", value=st["last_heard"])
    yield GaugeMetricFamily("router_ha_sync_lag_seconds", "How long the oldest change not "
                            "yet sent (FTFW: not yet acknowledged) has waited.", value=st["lag"])
    cache = GaugeMetricFamily("router_ha_cache_entries", "Connections in the sync caches: "
                              "internal (this router's), external (the peer's).",
                              labels=["cache"])
    cache.add_metric(["internal"], st["internal"])
    cache.add_metric(["external"], st["external"])
    yield cache
    msgs = CounterMetricFamily("router_ha_messages", "Sync messages, by what happened to "
                               "them.", labels=["what"])
    for what in ("sent", "received", "lost", "resent", "duplicates"):
        msgs.add_metric([what], st[what])
    yield msgs
    yield CounterMetricFamily("router_ha_sent_bytes", "Bytes of sync messages sent.",
                              value=st["sent_bytes"])
    bad = CounterMetricFamily("router_ha_malformed", "Sync messages dropped unread, by "
                              "reason.", labels=["reason"])
    for reason, n in st["malformed"].items():
        bad.add_metric([reason], n)
    bad.add_metric(["foreign"], st["foreign"])
    yield bad
    yield CounterMetricFamily("router_ha_commits", "Times this router took the peer's "
                              "connections into its data plane.", value=st["commits"])
    yield CounterMetricFamily("router_ha_events_lost", "Connection events lost before the "
                              "sync read them (each sends the whole table again).",
                              value=st["events_lost"])
