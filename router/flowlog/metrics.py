"""The flow log's metrics, from ``FlowExporter.status()`` (router/metrics.py
yields them with the rest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def ipfix_metrics(st: dict[str, Any]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    rec = CounterMetricFamily("router_ipfix_records", "IPFIX records, by what became of "
                              "them: sent, or not (over the rate, queue full, send failed).",
                              labels=["outcome"])
    for k, v in st["records"].items():
        rec.add_metric([k], v)
    yield rec
    yield CounterMetricFamily("router_ipfix_messages", "IPFIX messages sent (templates "
                              "included).", value=st["messages"])
    yield CounterMetricFamily("router_ipfix_events_lost", "Connection events the data "
                              "plane's ring dropped while the flow log read it.",
                              value=st["events_lost"])
    yield GaugeMetricFamily("router_ipfix_collector_up", "0 while a send to the collector "
                            "failed in the last 10 s.", value=0 if st["error"] else 1)
