"""Who is who on a LAN link, from the neighbour tables of the router's own
stack (ARP and neighbour discovery stay the kernel's on attached links): a
UPnP control point asking over IPv4 for a pinhole to an IPv6 address may,
if both addresses are the same machine, i.e. have one MAC address."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

from pyroute2 import IPRoute


def _lladdrs(links: Sequence[str]) -> dict[IPv4Address | IPv6Address, str]:
    out: dict[IPv4Address | IPv6Address, str] = {}
    with IPRoute() as ipr:
        for name in links:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            for n in ipr.get_neighbours(ifindex=found[0]):
                dst, mac = n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")
                if dst and mac:
                    out[ip_address(dst)] = mac
    return out


async def same_host(a: IPv4Address | IPv6Address, b: IPv4Address | IPv6Address,
                    links: Sequence[str]) -> bool:
    """True if ``a`` and ``b`` have one link-layer address on ``links``
    (a netlink dump, off the event loop)."""
    macs = await asyncio.get_running_loop().run_in_executor(None, _lladdrs, list(links))
    return a in macs and macs.get(a) == macs.get(b)
