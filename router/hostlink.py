"""The host link: the router's own network stack as a host behind the router.

When a link offers LAN services (``[interface.lan]``), the config gains one
more interface, ``rt-self`` (zone ``self``): a TUN device that stays in the
router's namespace, whose far side is that namespace's own kernel, where
dnsmasq runs.  Through it:

- a LAN machine's connection to one of the router's addresses (a DNS query
  to 192.168.1.1) is delivered to the kernel as it is, after the router's
  input chain accepted it (the data plane: ``RT_IF_SERVICES``,
  ``RT_IF_HOST``); the kernel accepts it, since the address is its own (on
  the attached interface);
- everything the kernel sends without a chosen interface (dnsmasq's answers
  and its queries upstream, a ping from the namespace) goes to the router,
  which tracks, filters and masquerades it like a LAN host's.

Without it, the kernel would answer LAN machines past the router and send
its own queries from the WAN address, where the replies are the router's
(the ingress hook hands every IP packet of an attached interface to it).

The kernel side set up here, and taken down at stop:
- routing table 190 with a default route (both families) through the host
  link, looked up by a policy rule for locally generated packets
  (``iif lo``) before the main table.  A lookup for a chosen interface
  (the eBPF programs' next-hop lookups, DHCP's and neighbour discovery's
  packets) matches no route there and falls through to the main table;
- reverse-path filtering off on the host link (the LAN's sources arrive
  there, routed back through the attached interface).
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from router.config import Config
from router.config.model import HOST_LINK

TABLE = 190  # the router's routing table for its own stack
RULE_PRIORITY = 1000  # after the local table's rule (0), before main's (32766)
FAMILIES = (socket.AF_INET, socket.AF_INET6)


def sync(cfg: Config | None) -> None:
    """The kernel side of the host link, if ``cfg`` has one; else (and at
    stop, ``cfg`` None) nothing of it."""
    wanted = cfg is not None and any(i.host_link for i in cfg.interfaces)
    with IPRoute() as ipr:
        for family in FAMILIES:
            _rules(ipr, family, wanted)
            if wanted:
                index = ipr.link_lookup(ifname=HOST_LINK)
                if not index:
                    raise RuntimeError(f"the host link {HOST_LINK} does not exist")
                dst = "0.0.0.0/0" if family == socket.AF_INET else "::/0"
                ipr.route("replace", family=family, dst=dst, oif=index[0], table=TABLE)
            else:
                for rt in ipr.get_routes(family=family, table=TABLE):
                    with contextlib.suppress(Exception):
                        ipr.route("del", family=family, table=TABLE, dst=_dst(rt, family),
                                  oif=rt.get_attr("RTA_OIF"))
    if wanted:
        _sysctl(f"net/ipv4/conf/{HOST_LINK}/rp_filter", "0")


def _rules(ipr: Any, family: int, wanted: bool) -> None:
    ours = [r for r in ipr.get_rules(family=family)
            if r.get_attr("FRA_TABLE") == TABLE or r.get("table") == TABLE]
    for r in ours[1 if wanted else 0:]:
        with contextlib.suppress(Exception):
            ipr.rule("del", family=family, table=TABLE, priority=r.get_attr("FRA_PRIORITY"),
                     iifname=r.get_attr("FRA_IIFNAME"))
    if wanted and not ours:
        ipr.rule("add", family=family, table=TABLE, priority=RULE_PRIORITY, iifname="lo")


def _dst(rt: Any, family: int) -> str:
    d = rt.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    return f"{d}/{rt['dst_len']}"


def _sysctl(key: str, value: str) -> None:
    """Sets ``key`` unless it has that value already (a new namespace's
    default: /proc/sys is read-only in a container)."""
    path = Path("/proc/sys", key)
    if path.read_text().strip() != value:
        path.write_text(value)
