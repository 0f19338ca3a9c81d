"""Config to the flat tables the data plane loads.  Pure: no devices, no C.

Interfaces are numbered in config order; zones in order of first use.  The
routing table is the connected network of every interface followed by the
``[[route]]`` entries; a route through a gateway leaves through the interface
whose network holds the gateway.  Source NAT rules become one entry per source
prefix, in config order (``snat`` before ``masquerade``): first match wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from router.config import Backend, Config, Rule
from router.config.model import UNADDRESSED
from router.native.names import TIMEOUT_NAMES

ANY = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True, slots=True)
class IfaceEntry:
    fd: int
    addr: IPv4Address
    mtu: int
    zone: int
    vnet_hdr: bool
    rp_filter: int  # RT_RPF_*: 0 off, 1 loose, 2 strict
    addr6: IPv6Address | None
    services: bool = False  # the router's services are offered here (a LAN link)
    host: bool = False      # the host link


@dataclass(frozen=True, slots=True)
class Route6Entry:
    prefix: IPv6Network
    iface: int


@dataclass(frozen=True, slots=True)
class Npt6Entry:
    inside: IPv6Network
    outside: IPv6Network
    iface: int


@dataclass(frozen=True, slots=True)
class Masq6Entry:
    sources: IPv6Network
    out_iface: int


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
    pool_first: int = 0
    pool_size: int = 0


@dataclass(frozen=True, slots=True)
class DnatEntry:
    addr: IPv4Address
    proto: int
    port_min: int
    port_max: int
    to: IPv4Address
    to_port: int
    masquerade: bool
    lb_first: int = 0
    lb_size: int = 0


@dataclass(frozen=True, slots=True)
class LbSlot:
    addr: IPv4Address
    port: int
    backend: int  # global backend number


@dataclass(frozen=True, slots=True)
class FwEntry:
    chain: int    # 0 forward, 1 input
    action: int   # 0 accept, 1 drop, 2 reject
    proto: int
    states: int   # bits: 1 new, 2 established, 4 related; 0 = new
    from_zone: int
    to_zone: int
    src: IPv4Network | IPv6Network
    dst: IPv4Network | IPv6Network
    icmp_type: int
    port_min: int
    port_max: int


ACTION_CODES = {"accept": 0, "drop": 1, "reject": 2}
ANY6 = IPv6Network("::/0")


def _any_of(rule: Rule) -> IPv4Network | IPv6Network:
    """The match-all network of a rule's family (IPv6 if either side is)."""
    nets = [n for n in (rule.source, rule.destination) if n is not None]
    return ANY6 if nets and nets[0].version == 6 else ANY
STATE_BITS = {"new": 1, "established": 2, "related": 4}


@dataclass(frozen=True, slots=True)
class Tables:
    """The config as the data plane takes it: every field set from the
    config by compile_tables() (no defaults here: they are the model's)."""

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
    eim: bool
    tcp_liberal: bool
    tcp_max_retrans: int
    filtering: int  # 0 APDF, 1 ADF, 2 EIF (rt.h RT_FILTER_*)
    nat_pool: tuple[IPv4Address, ...]
    fw: tuple[FwEntry, ...]
    input_policy: int
    icmp_rate: int
    src_conn_cap: int
    src_new_rate: int
    src_prefix6: int
    src_share: int
    lb_slots: tuple[LbSlot, ...]
    backends: tuple[tuple[str, str], ...]  # (load balancer, "addr:port") by number
    routes6: tuple[Route6Entry, ...]
    npt6: tuple[Npt6Entry, ...]
    masq6: tuple[Masq6Entry, ...]


def compile_tables(cfg: Config, fds: Mapping[str, int], vnet_hdr: bool = False) -> Tables:
    """Builds the tables for ``cfg``; ``fds`` maps interface names to TUN fds
    (an interface missing from it gets -1: no device, as in tests);
    ``vnet_hdr`` says the devices were opened with IFF_VNET_HDR."""
    index = {i.name: n for n, i in enumerate(cfg.interfaces)}
    zones = cfg.zones
    zindex = {z: n for n, z in enumerate(zones)}

    ifaces = tuple(
        IfaceEntry(fd=fds.get(i.name, -1), addr=i.address.ip, mtu=i.mtu, zone=zindex[i.zone],
                   vnet_hdr=vnet_hdr,
                   rp_filter={"off": 0, "loose": 1, "strict": 2}[i.rp_filter],
                   addr6=i.address6.ip if i.address6 is not None else None,
                   services=i.lan is not None, host=i.host_link)
        for i in cfg.interfaces
    )
    routes6 = [Route6Entry(i.address6.network, index[i.name]) for i in cfg.interfaces
               if i.address6 is not None]
    routes6 += [Route6Entry(r.destination, index[r.interface]) for r in cfg.routes6]
    routes = [RouteEntry(i.address.network, index[i.name], None) for i in cfg.interfaces
              if i.address != UNADDRESSED]
    for r in cfg.routes:
        if r.interface is not None:
            out = index[r.interface]
        else:
            out = next(n for n, i in enumerate(cfg.interfaces)
                       if r.gateway is not None and r.gateway in i.address.network)
        routes.append(RouteEntry(r.destination, out, r.gateway))

    nat: list[NatEntry] = []
    pool: list[IPv4Address] = []
    for rule in cfg.nat.rules:
        first = len(pool)
        pool += rule.pool
        for src in rule.sources or (ANY,):
            nat.append(NatEntry(src, index[rule.interface], rule.to, first, len(rule.pool)))

    # A forward or load balancer on the address of an interface that takes
    # it by DHCP follows the lease; without one it waits (nothing to forward).
    current = {i.name: i.address.ip for i in cfg.interfaces if i.dhcp}
    unaddressed = UNADDRESSED.ip

    def at(address: IPv4Address, interface: str) -> IPv4Address:
        return current.get(interface, address) if address == unaddressed else address

    dnat = [DnatEntry(at(f.address, f.interface), 6 if f.protocol == "tcp" else 17, f.port_min,
                      f.port_max, f.to, f.to_port, f.masquerade) for f in cfg.nat.forwards
            if at(f.address, f.interface) != unaddressed]
    slots: list[LbSlot] = []
    backends: list[tuple[str, str]] = []
    for lb in cfg.loadbalancers:
        base = len(backends)
        backends += [(lb.name, f"{b.address}:{b.port}") for b in lb.backends]
        table = maglev(lb.backends, lookup_size(len(lb.backends)))
        first = len(slots)
        slots += [LbSlot(lb.backends[i].address, lb.backends[i].port, base + i) for i in table]
        if at(lb.address, lb.interface) != unaddressed:  # (its backends keep their numbers)
            dnat.append(DnatEntry(at(lb.address, lb.interface),
                                  6 if lb.protocol == "tcp" else 17, lb.port, lb.port,
                                  lb.backends[0].address, lb.backends[0].port, lb.masquerade,
                                  lb_first=first, lb_size=len(table)))

    default = cfg.firewall.forward == "accept"
    policy = [[default] * len(zones) for _ in zones]
    for p in cfg.firewall.policies:
        policy[zindex[p.from_zone]][zindex[p.to_zone]] = p.action == "accept"

    return Tables(
        ifaces=ifaces,
        routes=tuple(routes),
        routes6=tuple(routes6),
        npt6=tuple(Npt6Entry(n.inside, n.outside, index[n.interface]) for n in cfg.nat.npt6),
        masq6=tuple(Masq6Entry(s, index[m.interface]) for m in cfg.nat.masquerade6
                    for s in m.sources or (IPv6Network("::/0"),)),
        nat=tuple(nat),
        dnat=tuple(dnat),
        zones=zones,
        policy=tuple(tuple(row) for row in policy),
        timeouts=tuple(cfg.conntrack.timeouts[name] for name in TIMEOUT_NAMES),
        port_min=cfg.nat.port_min,
        port_max=cfg.nat.port_max,
        tcp_loose=cfg.conntrack.tcp_loose,
        tcp_liberal=cfg.conntrack.tcp_liberal,
        tcp_max_retrans=cfg.conntrack.tcp_max_retrans,
        checksum=cfg.conntrack.checksum,
        preserve_ports=cfg.nat.preserve_ports,
        eim=cfg.nat.mapping == "endpoint-independent",
        filtering={"address-and-port-dependent": 0, "address-dependent": 1,
                   "endpoint-independent": 2}[cfg.nat.filtering],
        nat_pool=tuple(pool),
        fw=tuple(
            FwEntry(chain=0 if x.chain == "forward" else 1, action=ACTION_CODES[x.action],
                    proto=x.protocol, states=sum(STATE_BITS[s] for s in x.states),
                    from_zone=zindex[x.from_zone] if x.from_zone else -1,
                    to_zone=zindex[x.to_zone] if x.to_zone else -1,
                    src=x.source or _any_of(x), dst=x.destination or _any_of(x),
                    icmp_type=-1 if x.icmp_type is None else x.icmp_type,
                    port_min=x.port_min, port_max=x.port_max)
            for x in cfg.firewall.rules),
        input_policy=ACTION_CODES[cfg.firewall.input],
        icmp_rate=cfg.firewall.icmp_rate,
        src_conn_cap=cfg.firewall.max_connections_per_source,
        src_new_rate=cfg.firewall.new_connections_per_source,
        src_prefix6=cfg.firewall.source_prefix6,
        src_share=cfg.firewall.source_share,
        lb_slots=tuple(slots),
        backends=tuple(backends),
    )


def lookup_size(n_backends: int) -> int:
    """A prime well above the backend count: 4099 slots for up to 32 backends
    (imbalance under 1 %), 65537 beyond."""
    return 4099 if n_backends <= 32 else 65537


def maglev(backends: Sequence[Backend], size: int) -> list[int]:
    """Maglev's lookup table (Eisenbud et al., NSDI 2016), with weights.

    Each backend has a preference order over the slots, a permutation given
    by an offset and a skip hashed from its identity (address and port), so it
    does not depend on the other backends.  Backends take turns claiming their
    next preferred free slot, each as many per turn as its weight.  Adding or
    removing a backend therefore moves few slots: mostly those it gains or
    loses.  Returns the backend index of every slot.
    """
    n = len(backends)
    offset, skip = [], []
    for b in backends:
        h = hashlib.sha256(f"{b.address}:{b.port}".encode()).digest()
        offset.append(int.from_bytes(h[:8], "big") % size)
        skip.append(int.from_bytes(h[8:16], "big") % (size - 1) + 1)
    table = [-1] * size
    nxt = [0] * n
    filled = 0
    while True:
        for i in range(n):
            for _ in range(backends[i].weight):
                c = (offset[i] + nxt[i] * skip[i]) % size
                while table[c] >= 0:
                    nxt[i] += 1
                    c = (offset[i] + nxt[i] * skip[i]) % size
                table[c] = i
                nxt[i] += 1
                filled += 1
                if filled == size:
                    return table
