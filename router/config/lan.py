"""The LAN services' keys: ``[interface.lan]`` on each LAN link and the
``[lan]`` section, and the host link they make (``router/hostlink.py``).

The services (DHCP, router advertisements, DNS) are dnsmasq's
(``router/lanservices.py``); what is checked here is what dnsmasq would
otherwise refuse at start, or accept and get wrong: a pool off the link, a
static lease on the router's own address, SLAAC on a prefix that is not a /64.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from typing import Any

from router.config.model import (
    HOST_LINK,
    HOST_ZONE,
    MAX_STATIC_LEASES,
    Interface,
    Lan,
    LanServices,
    StaticLease,
)
from router.config.reader import Reader, plain_path

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# A host name label (RFC 1123), and a domain of such labels.
HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DOMAIN_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def lan_services(r: Reader, t: Mapping[str, Any], w: str, address: IPv4Interface, dhcp: bool,
                 address6: Any, attach: str | None) -> LanServices | None:
    """The ``lan`` table of interface ``w``, if any."""
    if "lan" not in t:
        return None
    where = f"{w}.lan"
    lt = r.table(t, "lan", w)
    r.known(lt, where, {"pool", "lease", "ra", "static"})
    if attach is None:
        raise r.fail(where, "LAN services need an attached interface (attach): the LAN's "
                     "machines reach dnsmasq's DHCP and router advertisements through it")
    if dhcp:
        raise r.fail(where, "a link whose address comes by DHCP is a WAN: it offers no "
                     "LAN services")
    pool = None
    if "pool" in lt:
        pool = _pool(r, lt["pool"], f"{where}.pool", address)
    ra = r.knob(lt, LanServices, "ra", where)
    if ra and address6 is not None and address6.network.prefixlen != 64:
        raise r.fail(f"{where}.ra", f"SLAAC needs a /64 (RFC 4862), and {w}.address6 is a "
                     f"/{address6.network.prefixlen}: set ra = false or use a /64")
    statics = _statics(r, lt, where, address)
    return LanServices(pool=pool, lease=r.knob(lt, LanServices, "lease", where), ra=ra,
                       static=statics)


def _pool(r: Reader, val: Any, key: str, address: IPv4Interface
          ) -> tuple[IPv4Address, IPv4Address]:
    m = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", val) if isinstance(val, str) else None
    if not m:
        raise r.fail(key, "must be 'FIRST-LAST', like '192.168.1.100-192.168.1.199'")
    first, last = (r.address(m.group(k), key) for k in (1, 2))
    net = address.network
    for a in (first, last):
        if a not in net or a in (net.network_address, net.broadcast_address):
            raise r.fail(key, f"{a} is not a host address of the link's network {net}")
    if first > last:
        raise r.fail(key, f"{first} comes after {last}")
    if first <= address.ip <= last:
        raise r.fail(key, f"the pool holds the router's own address {address.ip}")
    return first, last


def _statics(r: Reader, lt: Mapping[str, Any], where: str, address: IPv4Interface
             ) -> tuple[StaticLease, ...]:
    out: list[StaticLease] = []
    items = r.tables(lt, "static", where)
    if len(items) > MAX_STATIC_LEASES:
        raise r.fail(f"{where}.static", f"at most {MAX_STATIC_LEASES} static leases")
    for w, st in items:
        r.known(st, w, {"mac", "address", "name"})
        mac = r.get(st, "mac", w, str, required=True).lower()
        if not MAC_RE.fullmatch(mac):
            raise r.fail(f"{w}.mac", "must be a MAC address like '52:54:00:12:34:56'")
        addr = r.address(r.get(st, "address", w, str, required=True), f"{w}.address")
        net = address.network
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise r.fail(f"{w}.address", f"{addr} is not a host address of the link's "
                         f"network {net}")
        if addr == address.ip:
            raise r.fail(f"{w}.address", "is the router's own address")
        name = r.get(st, "name", w, str, "").lower()
        if name and not HOSTNAME_RE.fullmatch(name):
            raise r.fail(f"{w}.name", "must be a host name: letters, digits and '-', "
                         "1-63 characters")
        for other in out:
            if other.mac == mac or other.address == addr or (name and other.name == name):
                raise r.fail(w, "a second static lease with the same MAC, address or name")
        out.append(StaticLease(mac=mac, address=addr, name=name))
    return tuple(out)


def lan_section(r: Reader, doc: Mapping[str, Any]) -> Lan:
    _, v = r.section(doc, "lan", Lan)
    if not DOMAIN_RE.fullmatch(v["domain"]) or len(v["domain"]) > 253:
        raise r.fail("lan.domain", "must be a domain name like 'home.arpa'")
    for n, s in enumerate(v["upstream"]):
        try:
            if not isinstance(s, str):
                raise ValueError
            a = ip_address(s)
        except ValueError:
            raise r.fail(f"lan.upstream[{n}]", "must be an IPv4 or IPv6 address") from None
        if a.is_unspecified or a.is_multicast:
            raise r.fail(f"lan.upstream[{n}]", f"{a} is not a DNS server's address")
    for n, d in enumerate(v["rebind_ok"]):
        if not isinstance(d, str) or not DOMAIN_RE.fullmatch(d) or len(d) > 253:
            raise r.fail(f"lan.rebind_ok[{n}]", "must be a domain name like 'example.net'")
    try:
        link = IPv4Network(v["host_link"], strict=True)
    except ValueError as e:
        raise r.fail("lan.host_link", f"not an IPv4 network: {e}") from None
    if link.prefixlen > 30:
        raise r.fail("lan.host_link", "needs two host addresses: a /30 or larger")
    if not plain_path(v["lease_file"]):
        raise r.fail("lan.lease_file", "must be an absolute path without '..' or control "
                     "characters")
    return Lan(**v)


def host_link(r: Reader, lan: Lan, interfaces: tuple[Interface, ...]) -> Interface | None:
    """The host link, when a link offers services: its router end is the
    first address of ``lan.host_link``, the router's own stack the second."""
    for n, i in enumerate(interfaces):
        if i.name == HOST_LINK or i.zone == HOST_ZONE:
            key = "name" if i.name == HOST_LINK else "zone"
            raise r.fail(f"interface[{n}].{key}", f"{HOST_LINK!r} and zone {HOST_ZONE!r} are "
                         "the host link's (the router's own services)")
    if not any(i.lan for i in interfaces):
        return None
    net = IPv4Network(lan.host_link)
    for n, i in enumerate(interfaces):
        if i.address.network.overlaps(net) and not i.dhcp:
            raise r.fail("lan.host_link", f"{net} overlaps the network of interface[{n}]")
    hosts = net.hosts()
    ours, stack = next(hosts), next(hosts)
    return Interface(name=HOST_LINK, zone=HOST_ZONE,
                     address=IPv4Interface(f"{ours}/{net.prefixlen}"),
                     host_address=IPv4Interface(f"{stack}/{net.prefixlen}"),
                     mtu=max(i.mtu for i in interfaces), rp_filter="off", host_link=True)
