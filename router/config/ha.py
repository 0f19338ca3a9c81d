"""The ``[ha]`` section: one router of an active/standby pair.

What is checked here is what would make the pair unsafe or silently
useless: no peer or local address, the two the same, a sync link that is
one of the router's own interfaces (the sync must not cross the data plane
it describes), a table that cannot travel, a watched address that is no
address.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, ip_address
from typing import Any

from router.config.model import HA_TABLES, Ha, Interface
from router.config.reader import Reader, plain_path


def ha_section(r: Reader, doc: Mapping[str, Any], interfaces: tuple[Interface, ...]) -> Ha:
    _, v = r.section(doc, "ha", Ha)
    ha = Ha(**v)
    for n, t in enumerate(ha.tables):
        if t not in HA_TABLES:
            raise r.fail(f"ha.tables[{n}]", f"must be one of {', '.join(HA_TABLES)}, got {t!r}")
    for n, a in enumerate(ha.watch):
        _addr(r, a, f"ha.watch[{n}]", any_family=True)
    if not ha.enabled:
        return ha
    local = _addr(r, ha.local, "ha.local")
    peer = _addr(r, ha.peer, "ha.peer")
    if local == peer:
        raise r.fail("ha.peer", f"is the local address {local}: the peer is the other router")
    if ha.interface in {i.name for i in interfaces} | {i.attach for i in interfaces if i.attach}:
        raise r.fail("ha.interface", f"{ha.interface} carries the router's traffic: the sync "
                     "needs a link of its own, outside the data plane")
    if ha.track_file and not plain_path(ha.track_file):
        raise r.fail("ha.track_file", "must be an absolute path without '..' or control "
                     "characters")
    if not ha.tables:
        raise r.fail("ha.tables", "is empty: name at least one table to keep in sync")
    return ha


def _addr(r: Reader, val: Any, key: str, any_family: bool = False) -> Any:
    if not isinstance(val, str) or not val:
        raise r.fail(key, "is required: an IPv4 address like '10.99.0.1'" if not any_family
                     else "must be an address like '192.168.1.1'")
    try:
        a = ip_address(val)
    except ValueError:
        raise r.fail(key, f"not an address: {val!r}") from None
    if not any_family and not isinstance(a, IPv4Address):
        raise r.fail(key, "must be an IPv4 address (conntrackd's UDP channel is IPv4)")
    if a.is_multicast or a.is_unspecified or a.is_loopback:
        raise r.fail(key, f"{a} is not a unicast host address")
    return a

