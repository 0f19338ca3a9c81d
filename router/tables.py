"""Config to the flat tables the data plane loads.  Pure: no devices, no C.

Interfaces are numbered in config order; zones in order of first use.  The
routing table is the connected network of every interface followed by the
``[[route]]`` entries; a route through a gateway leaves through the interface
whose network holds the gateway.  Source NAT rules become one entry per source
prefix, in config order (``snat`` before ``masquerade``): first match wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from router.config import Config
from router.datapath import TIMEOUT_NAMES

ANY = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True, slots=True)
class IfaceEntry:
    fd: int
    addr: IPv4Address
    mtu: int
    zone: int
    vnet_hdr: bool = False


@dataclass(frozen=True, slots=True)
class RouteEntry:
    prefix: IPv4Network
    iface: int
    gateway: IPv4Address | None


@dataclass(frozen=True, slots=True)
class NatEntry:
    sources: IPv4Network
    out_iface: int
    to: IPv4Address | None


@dataclass(frozen=True, slots=True)
class DnatEntry:
    addr: IPv4Address
    proto: int
    port_min: int
    port_max: int
    to: IPv4Address
    to_port: int
    masquerade: bool


@dataclass(frozen=True, slots=True)
class Tables:
    ifaces: tuple[IfaceEntry, ...]
    routes: tuple[RouteEntry, ...]
    nat: tuple[NatEntry, ...]
    dnat: tuple[DnatEntry, ...]
    zones: tuple[str, ...]
    policy: tuple[tuple[bool, ...], ...]  # [from][to]: accept NEW
    timeouts: tuple[int, ...]             # seconds, in the C order
    port_min: int
    port_max: int
    tcp_loose: bool
    checksum: bool
    preserve_ports: bool
    eim: bool = True
    filtering: int = 1  # 0 APDF, 1 ADF, 2 EIF (rt.h RT_FILTER_*)


def compile_tables(cfg: Config, fds: Mapping[str, int], vnet_hdr: bool = False) -> Tables:
    """Builds the tables for ``cfg``; ``fds`` maps interface names to TUN fds
    (an interface missing from it gets -1: no device, as in tests);
    ``vnet_hdr`` says the devices were opened with IFF_VNET_HDR."""
    index = {i.name: n for n, i in enumerate(cfg.interfaces)}
    zones = cfg.zones
    zindex = {z: n for n, z in enumerate(zones)}

    ifaces = tuple(
        IfaceEntry(fd=fds.get(i.name, -1), addr=i.address.ip, mtu=i.mtu, zone=zindex[i.zone],
                   vnet_hdr=vnet_hdr)
        for i in cfg.interfaces
    )
    routes = [RouteEntry(i.address.network, index[i.name], None) for i in cfg.interfaces]
    for r in cfg.routes:
        if r.interface is not None:
            out = index[r.interface]
        else:
            out = next(n for n, i in enumerate(cfg.interfaces)
                       if r.gateway is not None and r.gateway in i.address.network)
        routes.append(RouteEntry(r.destination, out, r.gateway))

    nat: list[NatEntry] = []
    for rule in cfg.nat.rules:
        for src in rule.sources or (ANY,):
            nat.append(NatEntry(src, index[rule.interface], rule.to))

    default = cfg.forward_default == "accept"
    policy = [[default] * len(zones) for _ in zones]
    for p in cfg.policies:
        policy[zindex[p.from_zone]][zindex[p.to_zone]] = p.action == "accept"

    return Tables(
        ifaces=ifaces,
        routes=tuple(routes),
        nat=tuple(nat),
        dnat=tuple(DnatEntry(f.address, 6 if f.protocol == "tcp" else 17, f.port_min,
                             f.port_max, f.to, f.to_port, f.masquerade)
                   for f in cfg.nat.forwards),
        zones=zones,
        policy=tuple(tuple(row) for row in policy),
        timeouts=tuple(cfg.conntrack.timeouts[name] for name in TIMEOUT_NAMES),
        port_min=cfg.nat.port_min,
        port_max=cfg.nat.port_max,
        tcp_loose=cfg.conntrack.tcp_loose,
        checksum=cfg.conntrack.checksum,
        preserve_ports=cfg.nat.preserve_ports,
        eim=cfg.nat.mapping == "endpoint-independent",
        filtering={"address-and-port-dependent": 0, "address-dependent": 1,
                   "endpoint-independent": 2}[cfg.nat.filtering],
    )
