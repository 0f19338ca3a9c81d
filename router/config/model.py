"""The config as frozen dataclasses: one per TOML section, defaults written once.

A scalar key has a field of the same name in the dataclass of its section,
and its default, range or choices are written here alone, as the field's
default and ``knob()`` metadata: the parser (``parse.py``) reads keys with
them, and ``docs/config.md``'s tables are checked against them
(``tests/unit/test_config_docs.py``).  Arrays of tables are tuples under a
plural name (``[[interface]]`` → ``interfaces``, ``[[firewall.rule]]`` →
``firewall.rules``); ``[[route]]`` splits by family into ``routes`` and
``routes6``, ``[[nat.snat]]`` and ``[[nat.masquerade]]`` share ``nat.rules``.

Pure: nothing here reads files, touches devices or loads the data plane.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Any

from router.native.names import PM_MAX, TIMEOUT_DEFAULTS

# Whole-string patterns, used with fullmatch (a "$" would also match before
# a trailing newline, and such a name fails only later, at run time).
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_INTERFACES = 64
MAX_ZONES = 32
MAX_TIMEOUT = 20 * 86400  # the data plane keeps deadlines within 2^31 ms
MAX_CONFIG_BYTES = 4 << 20  # far above any real config; bounds the time and memory of a read
ACTIONS = ("accept", "drop")
MAPPINGS = ("endpoint-independent", "address-and-port-dependent")
FILTERINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "gre": 47}
STATES = ("new", "established", "related")
# Drops logged with `firewall.log = true` unless `log_reasons` says otherwise:
# the ones a firewall decides, not malformed packets.
DEFAULT_LOG_REASONS = ("firewall_drop", "firewall_reject", "policy", "spoofed_source",
                       "source_conn_limit", "source_rate_limit", "source_share", "ct_invalid",
                       "tcp_out_of_window", "tcp_invalid_rst", "bad_tcp_flags")


# The address of an interface that has none (yet): one with address = "dhcp"
# before its lease.  0.0.0.0 is never a router's address, so the data plane
# takes it as none.
UNADDRESSED = IPv4Interface("0.0.0.0/32")


class ConfigError(Exception):
    """A config file that cannot be used, with where and why."""

    def __init__(self, path: str, key: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


def knob(default: Any, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[str, ...] = ()) -> Any:
    """A scalar key's field: its default, and the range or choices the
    parser holds it to."""
    meta = {"knob": True, "lo": lo, "hi": hi, "choices": choices}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


# The host link (router/hostlink.py): the link between the data plane and
# the router's own network stack, where its LAN services run.  Made by the
# router when a link offers services, never written in the file.
HOST_LINK = "rt-self"
HOST_ZONE = "self"
MAX_LEASE = 365 * 86400
MAX_STATIC_LEASES = 1024


@dataclass(frozen=True, slots=True)
class StaticLease:
    mac: str            # "52:54:00:12:34:56", lower case
    address: IPv4Address
    name: str = ""      # host name, also in the local domain's DNS


@dataclass(frozen=True, slots=True)
class LanServices:
    """``[interface.lan]``: what dnsmasq offers on one LAN link."""

    pool: tuple[IPv4Address, IPv4Address] | None = None  # DHCPv4 "first-last"; None: none
    lease: int = knob(43200, lo=120, hi=MAX_LEASE)      # seconds
    ra: bool = knob(True)  # router advertisements (SLAAC, RDNSS) if the link has address6
    static: tuple[StaticLease, ...] = ()


@dataclass(frozen=True, slots=True)
class Interface:
    """One TUN device: one L3 link."""

    name: str
    address: IPv4Interface
    zone: str
    mtu: int = knob(1500, lo=576, hi=65535)
    # A device's kernel-side queue: what the router has not read yet.  Deep
    # enough to ride out a scheduling hiccup at full load without losing
    # packets (bench flood: 1000 lost some, and each loss stalls a TCP flow
    # for a retransmission timeout); at most a few ms of queueing when
    # overloaded.
    txqueuelen: int = knob(4096, lo=1, hi=1_000_000)
    netns: str | None = None
    host_address: IPv4Interface | None = None
    host_routes: tuple[IPv4Network, ...] = ()
    rp_filter: str = knob("strict", choices=("strict", "loose", "off"))
    precreated: bool = knob(False)  # the device exists, set up by someone else
    address6: IPv6Interface | None = None       # the router's IPv6 address here
    host_address6: IPv6Interface | None = None  # the host side's
    host_routes6: tuple[IPv6Network, ...] = ()
    # A kernel network interface of the router's namespace whose IP packets
    # the router takes, the kernel keeping layer 2 (router/attach.py).
    attach: str | None = None
    # address = "dhcp": the address comes from a DHCP client on the attached
    # interface (router/wan.py); until a lease, ``address`` is UNADDRESSED.
    dhcp: bool = False
    # LAN services on this link; connections to the router's addresses from
    # here reach them (through the host link) if the input chain accepts.
    lan: LanServices | None = None
    host_link: bool = False  # this is the host link (HOST_LINK), made by the router
    # An attached link whose multicast stays the kernel's, as on a link with
    # LAN services: keepalived's VRRP advertisements (224.0.0.18).
    kernel_multicast: bool = knob(False)


@dataclass(frozen=True, slots=True)
class Route:
    destination: IPv4Network
    interface: str | None = None
    gateway: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class Route6:
    """An IPv6 route: a [[route]] whose destination is an IPv6 network.  A
    TUN link has no neighbours, so the interface is all that matters there;
    on an attached interface a gateway names the next hop."""

    destination: IPv6Network
    interface: str
    gateway: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class Npt6:
    """IPv6-to-IPv6 network prefix translation (RFC 6296) on an interface."""

    interface: str
    inside: IPv6Network
    outside: IPv6Network


@dataclass(frozen=True, slots=True)
class Masquerade6:
    """NAT66 masquerade: new IPv6 connections from ``sources`` (all when
    empty) leaving through ``interface`` take its IPv6 address."""

    interface: str
    sources: tuple[IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceNat:
    """Source NAT for new connections leaving through ``interface``.

    ``to`` is None for masquerade: the interface's own address.
    """

    interface: str
    sources: tuple[IPv4Network, ...] = ()
    to: IPv4Address | None = None
    pool: tuple[IPv4Address, ...] = ()  # several addresses, paired per inside host


@dataclass(frozen=True, slots=True)
class PortForward:
    """Destination NAT: connections to ``address`` (default: ``interface``'s
    own address) on ``protocol`` ports ``port_min``..``port_max`` go to
    ``to``, ports from ``to_port`` on."""

    interface: str
    address: IPv4Address
    protocol: str  # "tcp" or "udp"
    port_min: int
    port_max: int
    to: IPv4Address
    to_port: int
    masquerade: bool = False


@dataclass(frozen=True, slots=True)
class Backend:
    address: IPv4Address
    port: int
    weight: int = knob(1, lo=1, hi=100)


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """A virtual IP and port in front of several backends (layer 4, NAT
    mode): each new connection goes to one backend, chosen by consistent
    (Maglev) hashing; conntrack keeps it there."""

    name: str
    interface: str
    address: IPv4Address
    protocol: str  # "tcp" or "udp"
    port: int
    backends: tuple[Backend, ...]
    masquerade: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A firewall rule; fields left out match anything."""

    chain: str  # "forward" or "input"
    action: str  # "accept", "drop" or "reject"
    from_zone: str | None = None
    to_zone: str | None = None
    source: IPv4Network | IPv6Network | None = None
    destination: IPv4Network | IPv6Network | None = None
    protocol: int = 0
    port_min: int = 0
    port_max: int = 0
    icmp_type: int | None = None
    states: tuple[str, ...] = ()
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    from_zone: str
    to_zone: str
    action: str


@dataclass(frozen=True, slots=True)
class Conntrack:
    max: int = knob(65536, lo=16, hi=1 << 26)
    tcp_loose: bool = knob(True)
    tcp_liberal: bool = knob(False)
    tcp_max_retrans: int = knob(3, lo=1, hi=15)
    checksum: bool = knob(True)
    gc_interval: float = knob(5.0, lo=0.1, hi=300)
    # The state file's directory belongs to the service user; the key, one
    # level up, to root alone (docs/deployment.md).
    state_file: str = knob("/var/lib/router/state/conntrack.json")
    state_key: str = knob("/var/lib/router/state.key")
    timeouts: Mapping[str, int] = field(default_factory=lambda: dict(TIMEOUT_DEFAULTS))


@dataclass(frozen=True, slots=True)
class Nat:
    port_min: int = knob(1024, lo=1, hi=65535)
    port_max: int = knob(65535, lo=1, hi=65535)
    preserve_ports: bool = knob(True)
    mapping: str = knob("endpoint-independent", choices=MAPPINGS)
    filtering: str = knob("address-dependent", choices=FILTERINGS)
    rules: tuple[SourceNat, ...] = ()
    forwards: tuple[PortForward, ...] = ()
    npt6: tuple[Npt6, ...] = ()
    masquerade6: tuple[Masquerade6, ...] = ()


@dataclass(frozen=True, slots=True)
class Firewall:
    forward: str = knob("drop", choices=ACTIONS)
    input: str = knob("accept", choices=("accept", "drop", "reject"))
    icmp_rate: int = knob(1000, lo=0, hi=1_000_000)
    max_connections_per_source: int = knob(0, lo=0, hi=1 << 26)
    # New connections per second (and burst) one source may open: above what
    # a host opens in normal use (a burst of 1500 DNS lookups passes), and
    # what keeps one host's flood from reaching the rest of the pipeline
    # (bench flood, docs/performance.md: 1000 stalled less, 5000 twice as much).
    new_connections_per_source: int = knob(2000, lo=0, hi=1_000_000)
    source_prefix6: int = knob(128, lo=1, hi=128)  # IPv6 sources counted per prefix
    # No source may hold more than this percent of the connection table, and
    # when the table is full a source under its fair share evicts from one
    # over it.
    source_share: int = knob(50, lo=0, hi=100)
    log: bool = knob(False)
    log_reasons: tuple[str, ...] = knob(DEFAULT_LOG_REASONS)
    log_rate: int = knob(10, lo=1, hi=100_000)  # logged drops per second at most
    policies: tuple[Policy, ...] = ()
    rules: tuple[Rule, ...] = ()

    @property
    def logged(self) -> tuple[str, ...]:
        """The drop reasons logged: none unless ``log`` is on."""
        return self.log_reasons if self.log else ()


@dataclass(frozen=True, slots=True)
class Control:
    socket: str = knob("/run/router/router.sock")


@dataclass(frozen=True, slots=True)
class Metrics:
    listen: str = knob("127.0.0.1:9188")


@dataclass(frozen=True, slots=True)
class Log:
    level: str = knob("info", choices=("debug", "info", "warning", "error"))
    format: str = knob("auto", choices=("auto", "json", "console"))
    output: str = knob("stderr", choices=("stderr", "stdout"))


@dataclass(frozen=True, slots=True)
class Dataplane:
    batch: int = knob(64, lo=1, hi=1024)
    offload: bool = knob(True)
    tun_device: str = knob("/dev/net/tun")
    busy_poll: int = knob(0, lo=0, hi=10_000_000)  # microseconds after traffic; 0 = off
    queues: int = knob(1, lo=1, hi=64)  # TUN queues per device, a worker each when > 1
    workers: bool = knob(True)  # C worker threads move the packets (else the event loop)
    syn_queue: bool = knob(True)  # TCP connection openers get a queue and worker of their own


@dataclass(frozen=True, slots=True)
class Service:
    user: str = knob("")  # drop to this user after setup when started as root
    group: str = knob("")  # and this group ("" = the user's primary group)
    keep_net_admin: bool = knob(True)  # keep CAP_NET_ADMIN after dropping


@dataclass(frozen=True, slots=True)
class Lan:
    """``[lan]``: the LAN services that are not per link (dnsmasq)."""

    dns: bool = knob(True)  # the caching DNS forwarder, on every LAN link
    domain: str = knob("home.arpa")  # local names: <host>.home.arpa (RFC 8375)
    upstream: tuple[str, ...] = knob(())  # DNS servers; none: those of the WAN's lease
    cache: int = knob(1000, lo=0, hi=10000)  # names cached
    # Upstream answers with private addresses are dropped (DNS rebinding
    # attacks on the LAN's devices), except for names under these domains.
    rebind_ok: tuple[str, ...] = knob(())
    # The host link's network: the router's end is its first address, the
    # router's own stack the second.  Link-local: never routed anywhere.
    host_link: str = knob("169.254.53.0/30")
    lease_file: str = knob("/var/lib/router/dhcp.leases")  # dnsmasq's, kept across restarts


# Port mapping (router/portmap/): the one port PCP and NAT-PMP share (RFC
# 6887 19.1, RFC 6886 3), where clients listen for announcements, and the
# most entries one table may hold (the data plane's RT_PM_MAX).
PCP_PORT = 5351
PCP_CLIENT_PORT = 5350
MAX_PORTMAPS = PM_MAX  # the data plane's RT_PM_MAX


ANY4 = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True, slots=True)
class PortmapRule:
    """``[[portmap.rule]]``, miniupnpd's permission lines: which inside hosts
    and ports may map which external ports.  First match wins."""

    allow: bool
    ports: tuple[int, int] = (1, 65535)       # external ports
    hosts: IPv4Network | IPv6Network = ANY4  # inside hosts
    host_ports: tuple[int, int] = (1, 65535)  # inside ports


# With no rule in the file: any LAN host, unprivileged ports both sides.
DEFAULT_PORTMAP_RULES = tuple(
    PortmapRule(allow=True, ports=(1024, 65535), hosts=net, host_ports=(1024, 65535))
    for net in (ANY4, IPv6Network("::/0")))


@dataclass(frozen=True, slots=True)
class Portmap:
    """``[portmap]``: mappings LAN hosts ask for, by PCP (RFC 6887), NAT-PMP
    (RFC 6886) and UPnP IGD, on the links with ``[interface.lan]``.  Each
    protocol is off until turned on."""

    pcp: bool = knob(False)
    natpmp: bool = knob(False)
    upnp: bool = knob(False)
    interface: str = knob("")       # the external interface (required when one is on)
    upnp_port: int = knob(5000, lo=1024, hi=65535)  # the IGD's HTTP port on LAN addresses
    min_lifetime: int = knob(120, lo=1, hi=86400)   # PCP: shorter asks get this (RFC 6887 15)
    max_lifetime: int = knob(86400, lo=60, hi=604800)  # every protocol: longer asks get this
    per_host: int = knob(64, lo=1, hi=MAX_PORTMAPS)  # mappings one inside host may hold
    total: int = knob(1024, lo=1, hi=MAX_PORTMAPS)   # mappings in all
    low_ports: bool = knob(False)   # external ports below 1024 may be mapped
    third_party: bool = knob(False)  # a host may map for another (PCP THIRD_PARTY, UPnP)
    rules: tuple[PortmapRule, ...] = DEFAULT_PORTMAP_RULES

    @property
    def enabled(self) -> bool:
        return self.pcp or self.natpmp or self.upnp


# High availability (router/ha/): conntrackd's sync protocol on its default
# UDP port, and the tables that can travel (connections, with their NAT
# bindings; the endpoint-independent mappings are rebuilt from them).
HA_PORT = 3780
HA_TABLES = ("connections",)


@dataclass(frozen=True, slots=True)
class Ha:
    """``[ha]``: one router of an active/standby pair.  keepalived decides
    which is active; the connection table travels to the peer in
    conntrackd's sync protocol, so that the standby can take over the
    active's connections (docs/ha.md)."""

    mode: str = knob("off", choices=("off", "notrack", "ftfw"))
    local: str = knob("")           # this router's address on the sync link
    peer: str = knob("")            # the peer's address on the sync link
    port: int = knob(HA_PORT, lo=1, hi=65535)
    interface: str = knob("")       # the sync link (a kernel interface, not an [[interface]])
    tables: tuple[str, ...] = knob(("connections",))
    rate: int = knob(4_000_000, lo=10_000, hi=1_000_000_000)  # bytes/s the sync may send
    mtu: int = knob(1500, lo=576, hi=9000)  # of the sync link: messages per datagram
    window: int = knob(300, lo=1, hi=65535)  # FTFW: acknowledge every this many messages
    resend_queue: int = knob(131072, lo=16, hi=4_194_304)  # FTFW: messages kept until acked
    cache_max: int = knob(1_048_576, lo=16, hi=16_777_216)  # peer's connections kept at most
    track_file: str = knob("")      # keepalived track_file: 0 ready, 1 not yet synced
    resync_timeout: float = knob(5.0, lo=0.5, hi=600.0)  # a lone router is ready after this
    watch: tuple[str, ...] = knob(())  # addresses whose arrival here means "active"

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


# Flow and NAT logging (router/flowlog/): IPFIX over UDP to the collector's
# IANA port unless told otherwise.
IPFIX_PORT = 4739


@dataclass(frozen=True, slots=True)
class Ipfix:
    """``[ipfix]``: connection and NAT events exported as IPFIX (RFC 7011)
    with RFC 8158's NAT event elements, to one collector over UDP."""

    collector: str = knob("")       # "ADDRESS:PORT" or "[IPv6]:PORT"; "" exports nothing
    events: str = knob("nat", choices=("nat", "all"))  # nat: translated connections only
    rate: int = knob(2000, lo=1, hi=1_000_000)  # records per second at most; more are counted
    template_interval: int = knob(60, lo=1, hi=3600)  # seconds between templates (UDP)
    domain: int = knob(1, lo=0, hi=0xFFFFFFFF)  # the observation domain id
    mtu: int = knob(1400, lo=576, hi=9000)  # bytes of one message at most

    @property
    def enabled(self) -> bool:
        return bool(self.collector)


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    interfaces: tuple[Interface, ...]
    sha256: str = ""  # of the bytes this was parsed from
    routes: tuple[Route, ...] = ()
    routes6: tuple[Route6, ...] = ()
    loadbalancers: tuple[LoadBalancer, ...] = ()
    nat: Nat = Nat()
    firewall: Firewall = Firewall()
    conntrack: Conntrack = Conntrack()
    control: Control = Control()
    metrics: Metrics = Metrics()
    log: Log = Log()
    dataplane: Dataplane = Dataplane()
    service: Service = Service()
    lan: Lan = Lan()
    portmap: Portmap = Portmap()
    ha: Ha = Ha()
    ipfix: Ipfix = Ipfix()

    @property
    def zones(self) -> tuple[str, ...]:
        """Zone names in a stable order (first use in the file)."""
        seen: dict[str, None] = {}
        for i in self.interfaces:
            seen.setdefault(i.zone, None)
        return tuple(seen)


# The dataclass of each TOML table whose scalar keys are knobs.
SECTIONS: dict[str, type] = {
    "interface": Interface, "loadbalancer.backend": Backend, "nat": Nat, "firewall": Firewall,
    "conntrack": Conntrack, "control": Control, "metrics": Metrics, "log": Log,
    "dataplane": Dataplane, "service": Service, "lan": Lan, "interface.lan": LanServices,
    "portmap": Portmap, "ha": Ha, "ipfix": Ipfix,
}
