"""The ``[ipfix]`` section: where the flow and NAT log goes (router/flowlog)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

from router.config.model import IPFIX_PORT, Ipfix
from router.config.reader import Reader


def ipfix_section(r: Reader, doc: Mapping[str, Any]) -> Ipfix:
    _, v = r.section(doc, "ipfix", Ipfix)
    cfg = Ipfix(**v)
    if cfg.enabled:
        collector_address(r, cfg.collector)
    return cfg


def collector_address(r: Reader | None, text: str) -> tuple[str, int]:
    """(address, port) of ``ipfix.collector``: "ADDRESS", "ADDRESS:PORT",
    "[IPv6]:PORT" (the port defaults to IANA's 4739)."""
    host, port = text, str(IPFIX_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        a = ip_address(host)
        p = int(port)
    except ValueError:
        a, p = None, 0
    if a is None or not 1 <= p <= 65535 or a.is_unspecified or a.is_multicast:
        msg = f"must be 'ADDRESS:PORT' of a collector (e.g. '127.0.0.1:4739'), got {text!r}"
        if r is None:
            raise ValueError(msg)
        raise r.fail("ipfix.collector", msg)
    return str(a), p
