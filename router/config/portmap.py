"""The ``[portmap]`` section and its ``[[portmap.rule]]`` permission lines.

What is checked here is what would make the port mapping services unsafe or
useless: an external interface that is not a WAN, no LAN link to serve,
lifetimes upside down, a rule that can never match.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from router.config.model import (
    DEFAULT_PORTMAP_RULES,
    Interface,
    Portmap,
    PortmapRule,
)
from router.config.reader import Reader
from router.config.rules import port_range

MAX_RULES = 256


def portmap_section(r: Reader, doc: Mapping[str, Any], interfaces: tuple[Interface, ...]
                    ) -> Portmap:
    t, v = r.section(doc, "portmap", Portmap, more=frozenset({"rule"}))
    rules = _rules(r, t) or DEFAULT_PORTMAP_RULES
    pm = Portmap(rules=rules, **v)
    if not pm.enabled:
        return pm
    names = {i.name: i for i in interfaces}
    ext = names.get(pm.interface)
    if not pm.interface:
        raise r.fail("portmap.interface", "is required: the external interface (the WAN) "
                     "whose address and ports the mappings take")
    if ext is None:
        raise r.fail("portmap.interface", f"no interface named {pm.interface!r}")
    if ext.lan is not None or ext.host_link:
        raise r.fail("portmap.interface", f"{pm.interface} is a LAN link, not the WAN")
    if not any(i.lan for i in interfaces):
        raise r.fail("portmap", "port mapping is a LAN service: it needs a link with "
                     "[interface.lan] to serve")
    if pm.min_lifetime > pm.max_lifetime:
        raise r.fail("portmap.min_lifetime", f"{pm.min_lifetime} is more than max_lifetime "
                     f"{pm.max_lifetime}")
    if pm.per_host > pm.total:
        raise r.fail("portmap.per_host", f"{pm.per_host} is more than total {pm.total}")
    return pm


def _rules(r: Reader, t: Mapping[str, Any]) -> tuple[PortmapRule, ...]:
    items = r.tables(t, "rule", "portmap")
    if len(items) > MAX_RULES:
        raise r.fail("portmap.rule", f"at most {MAX_RULES} rules")
    out = []
    for w, rt in items:
        r.known(rt, w, {"action", "ports", "hosts", "host_ports"})
        if "action" not in rt:
            raise r.fail(f"{w}.action", "is required: allow or deny")
        action = r.choice(rt, "action", w, ("allow", "deny"), "allow")
        ports = port_range(r, rt.get("ports", 1), f"{w}.ports") if "ports" in rt else (1, 65535)
        host_ports = (port_range(r, rt["host_ports"], f"{w}.host_ports")
                      if "host_ports" in rt else (1, 65535))
        hosts = _network(r, rt.get("hosts", "0.0.0.0/0"), f"{w}.hosts")
        out.append(PortmapRule(allow=action == "allow", ports=ports, hosts=hosts,
                               host_ports=host_ports))
    return tuple(out)


def _network(r: Reader, val: Any, key: str) -> IPv4Network | IPv6Network:
    if not isinstance(val, str):
        raise r.fail(key, "must be a network like '192.168.1.0/24' or '2001:db8:1::/64'")
    try:
        return ip_network(val, strict=True)
    except ValueError as e:
        raise r.fail(key, f"not a network: {e}") from None
