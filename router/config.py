"""TOML configuration: bytes in, frozen dataclasses out.

Reading is all-or-nothing.  ``load()`` parses the whole file with the standard
library's ``tomllib`` and checks every key before it returns; any problem raises
``ConfigError`` naming the file, the key (``interface[1].address``), the line
where that key sits when it can be found, and the reason.  Nothing here touches
devices or the data plane, so a bad file can be rejected while the router keeps
running on the old one.  Every key is documented in ``docs/config.md``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from pathlib import Path
from typing import Any

from router.datapath import DROP_NAMES, TIMEOUT_DEFAULTS

# Whole-string patterns, used with fullmatch (a "$" would also match before
# a trailing newline, and such a name fails only later, at run time).
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_INTERFACES = 64
MAX_ZONES = 32
MAX_TIMEOUT = 20 * 86400  # the data plane keeps deadlines within 2^31 ms
# A device's kernel-side queue: what the router has not read yet.  Deep
# enough to ride out a scheduling hiccup at full load without losing
# packets (bench flood: 1000 lost some, and each loss stalls a TCP flow for
# a retransmission timeout); at most a few ms of queueing when overloaded.
TXQUEUELEN = 4096
# New connections per second (and burst) one source may open: above what a
# host opens in normal use (a burst of 1500 DNS lookups passes), and what
# keeps one host's flood from reaching the rest of the pipeline (bench
# flood, docs/performance.md: 1000 stalled less, 5000 twice as much).
NEW_CONNS_PER_SOURCE = 2000
# No source may hold more than this percent of the connection table, and when
# the table is full a source under its fair share evicts from one over it.
SOURCE_SHARE = 50
MAX_CONFIG_BYTES = 4 << 20  # far above any real config; bounds the time and memory of a read
ACTIONS = ("accept", "drop")
MAPPINGS = ("endpoint-independent", "address-and-port-dependent")
FILTERINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


class ConfigError(Exception):
    """A config file that cannot be used, with where and why."""

    def __init__(self, path: str, key: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Interface:
    """One TUN device: one L3 link."""

    name: str
    address: IPv4Interface
    zone: str
    mtu: int = 1500
    txqueuelen: int = TXQUEUELEN
    netns: str | None = None
    host_address: IPv4Interface | None = None
    host_routes: tuple[IPv4Network, ...] = ()
    rp_filter: str = "strict"
    precreated: bool = False  # the device exists, set up by someone else
    address6: IPv6Interface | None = None       # the router's IPv6 address here
    host_address6: IPv6Interface | None = None  # the host side's
    host_routes6: tuple[IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    destination: IPv4Network
    interface: str | None = None
    gateway: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class Route6:
    """An IPv6 route: a [[route]] whose destination is an IPv6 network.  TUN
    links have no neighbours, so the interface is all that matters."""

    destination: IPv6Network
    interface: str


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
    weight: int = 1


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


# The state file's directory belongs to the service user; the key, one level
# up, to root alone (docs/deployment.md).
STATE_FILE = "/var/lib/router/state/conntrack.json"
STATE_KEY = "/var/lib/router/state.key"


@dataclass(frozen=True, slots=True)
class Conntrack:
    max_entries: int = 65536
    tcp_loose: bool = True
    tcp_liberal: bool = False
    tcp_max_retrans: int = 3
    checksum: bool = True
    timeouts: Mapping[str, int] = field(default_factory=lambda: dict(TIMEOUT_DEFAULTS))
    gc_interval: float = 5.0
    state_file: str = STATE_FILE
    state_key: str = STATE_KEY


@dataclass(frozen=True, slots=True)
class Nat:
    port_min: int = 1024
    port_max: int = 65535
    preserve_ports: bool = True
    mapping: str = "endpoint-independent"
    filtering: str = "address-dependent"
    rules: tuple[SourceNat, ...] = ()
    forwards: tuple[PortForward, ...] = ()
    npt6: tuple[Npt6, ...] = ()
    masquerade6: tuple[Masquerade6, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    interfaces: tuple[Interface, ...]
    sha256: str = ""  # of the bytes this was parsed from
    routes: tuple[Route, ...] = ()
    routes6: tuple[Route6, ...] = ()
    nat: Nat = Nat()
    policies: tuple[Policy, ...] = ()
    forward_default: str = "drop"
    input_default: str = "accept"
    icmp_rate: int = 1000
    max_conns_per_source: int = 0
    new_conns_per_source: int = NEW_CONNS_PER_SOURCE
    source_prefix6: int = 128        # IPv6 sources limited per prefix of this length
    source_share: int = SOURCE_SHARE  # percent of the table one source may hold
    log_drops: tuple[str, ...] = ()  # drop reasons logged; empty: none
    log_rate: int = 10               # logged drops per second at most
    rules: tuple[Rule, ...] = ()
    conntrack: Conntrack = Conntrack()
    loadbalancers: tuple[LoadBalancer, ...] = ()
    control_socket: str = "/run/router/router.sock"
    metrics_listen: str = "127.0.0.1:9188"
    log_level: str = "info"
    log_format: str = "auto"
    batch: int = 64
    offload: bool = True
    tun_device: str = "/dev/net/tun"
    busy_poll: int = 0           # microseconds of busy polling after traffic; 0 = off
    queues: int = 1              # TUN queues per device, a worker thread each when > 1
    workers: bool = True         # C worker threads move the packets (else the event loop)
    syn_queue: bool = True       # TCP connection openers get a queue and a worker of their own
    log_output: str = "stderr"
    user: str = ""              # drop to this user after setup when started as root
    group: str = ""             # and this group ("" = the user's primary group)
    keep_net_admin: bool = True  # keep CAP_NET_ADMIN after dropping

    @property
    def zones(self) -> tuple[str, ...]:
        """Zone names in a stable order (first use in the file)."""
        seen: dict[str, None] = {}
        for i in self.interfaces:
            seen.setdefault(i.zone, None)
        return tuple(seen)


# ---------------------------------------------------------------------------


class _Reader:
    """Walks a parsed TOML table with the path of every key it reads."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason, _find_line(self.lines, key))

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        val = parent.get(key, {})
        if not isinstance(val, dict):
            raise self.fail(_join(where, key), "must be a table")
        return val

    def array(self, parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
        val = parent.get(key, [])
        if not isinstance(val, list):
            raise self.fail(_join(where, key), "must be an array")
        return val

    def tables(self, parent: Mapping[str, Any], key: str, where: str
               ) -> list[tuple[str, Mapping[str, Any]]]:
        """The elements of an array of tables, each with its key path."""
        out: list[tuple[str, Mapping[str, Any]]] = []
        for n, t in enumerate(self.array(parent, key, where)):
            w = f"{_join(where, key)}[{n}]"
            if not isinstance(t, dict):
                raise self.fail(w, "must be a table")
            out.append((w, t))
        return out

    def interface(self, tbl: Mapping[str, Any], where: str,
                  ifaces: Mapping[str, Interface]) -> str:
        """The required ``interface`` key, naming a configured interface."""
        name = self.get(tbl, "interface", where, str, required=True)
        if name not in ifaces:
            raise self.fail(f"{where}.interface", f"no interface named {name!r}")
        return str(name)

    def known(self, tbl: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for k in tbl:
            if k not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(_join(where, k), f"unknown key (known keys: {hint})")

    def get(
        self,
        tbl: Mapping[str, Any],
        key: str,
        where: str,
        typ: type | tuple[type, ...],
        default: Any = None,
        required: bool = False,
    ) -> Any:
        if key not in tbl:
            if required:
                raise self.fail(_join(where, key), "is required")
            return default
        val = tbl[key]
        # bool is an int in Python; never accept one for the other.
        if isinstance(val, bool) and bool not in _as_tuple(typ):
            raise self.fail(_join(where, key), f"must be {_typename(typ)}, not a boolean")
        if not isinstance(val, typ):
            raise self.fail(_join(where, key), f"must be {_typename(typ)}")
        return val

    def integer(
        self, tbl: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
    ) -> int:
        val = self.get(tbl, key, where, int, default)
        if not lo <= val <= hi:
            raise self.fail(_join(where, key), f"must be between {lo} and {hi}, got {val}")
        return int(val)

    def choice(
        self, tbl: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str
    ) -> str:
        val = self.get(tbl, key, where, str, default)
        if val not in choices:
            raise self.fail(_join(where, key), f"must be one of {', '.join(choices)}, got {val!r}")
        return str(val)

    def network(self, val: Any, key: str) -> IPv4Network:
        if not isinstance(val, str):
            raise self.fail(key, "must be a string like '192.168.1.0/24'")
        try:
            return IPv4Network(val, strict=True)
        except ValueError as e:
            raise self.fail(key, f"not an IPv4 network: {e}") from None

    def iface_addr(self, val: Any, key: str) -> IPv4Interface:
        if not isinstance(val, str) or "/" not in val:
            raise self.fail(key, "must be an address with a prefix length, like '192.168.1.1/24'")
        try:
            addr = IPv4Interface(val)
        except ValueError as e:
            raise self.fail(key, f"not an IPv4 address/prefix: {e}") from None
        if addr.network.prefixlen > 30 and addr.network.prefixlen != 32:
            raise self.fail(key, "prefix length must be at most 30 (or 32)")
        if addr.ip in (addr.network.network_address, addr.network.broadcast_address) and (
            addr.network.prefixlen <= 30
        ):
            raise self.fail(key, f"{addr.ip} is the network or broadcast address of the link")
        _check_unicast(self, addr.ip, key)
        return addr

    def address(self, val: Any, key: str) -> IPv4Address:
        if not isinstance(val, str):
            raise self.fail(key, "must be a string like '192.0.2.1'")
        try:
            addr = IPv4Address(val)
        except ValueError as e:
            raise self.fail(key, f"not an IPv4 address: {e}") from None
        _check_unicast(self, addr, key)
        return addr


def _check_unicast(r: _Reader, addr: IPv4Address, key: str) -> None:
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
        raise r.fail(key, f"{addr} is not a unicast host address")


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _typename(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(x, x.__name__) for x in _as_tuple(t))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _find_line(lines: list[str], key: str) -> int | None:
    """Best-effort line of ``key`` (like ``interface[1].address``) in the file.

    tomllib reports positions only for syntax errors, so this follows table
    headers the way a reader would: the key's line inside its table, else the
    table's header, else the first line that mentions the key.
    """
    comps = re.findall(r"([A-Za-z0-9_-]+)(?:\[(\d+)\])?", key)
    if not comps:
        return None
    # An indexed last part is an array value (sources[0]) or an element of an
    # array of tables (route[0]): try the first reading, then the second.
    if not comps[-1][1]:
        return _line_in(lines, comps[:-1], comps[-1][0])
    found = _line_in(lines, comps[:-1], comps[-1][0], assignment_only=True)
    return found if found is not None else _line_in(lines, comps, None)


def _line_in(lines: list[str], table: list[tuple[str, str]], leaf: str | None,
             assignment_only: bool = False) -> int | None:
    want = ".".join(c for c, _ in table)
    want_idx = next((int(i) for _, i in reversed(table) if i), None)
    sub = f"{want}.{leaf}" if want and leaf else leaf
    counts: dict[str, int] = {}
    in_table = want == ""
    header_line = None
    hdr = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]")
    for n, line in enumerate(lines, 1):
        m = hdr.match(line)
        if m:
            name = m.group(2)
            if m.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
            if sub and name == sub and not assignment_only:
                return n
            in_table = name == want and (want_idx is None or counts.get(name) == want_idx)
            if in_table and header_line is None:
                header_line = n
            continue
        if in_table and leaf and re.match(rf"^\s*{re.escape(leaf)}\s*=", line):
            return n
    if assignment_only:
        return None
    if header_line:
        return header_line
    if leaf:
        for n, line in enumerate(lines, 1):
            if re.search(rf"\b{re.escape(leaf)}\b", line):
                return n
    return None


# ---------------------------------------------------------------------------


def warnings(cfg: Config) -> list[str]:
    """What is valid but probably unwise, for ``router check`` and the log
    at start: each as 'key: reason'."""
    out = []
    if cfg.metrics_listen and not _is_loopback(cfg.metrics_listen.rpartition(":")[0]):
        out.append(f"metrics.listen: {cfg.metrics_listen} is reachable from other machines, "
                   "and metrics have no authentication: anyone who can reach it learns the "
                   "connection counts, drops and interfaces; listen on 127.0.0.1 (or [::1]) "
                   "and let a local scraper or a TLS proxy expose it")
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def read(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.
    Opening never blocks on a FIFO or a device (O_NONBLOCK), and anything
    but a regular file is refused before a byte is read."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(p, "", f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(p, "", "not a regular file")
        if st.st_size > limit:
            raise ConfigError(p, "", f"{st.st_size} bytes; a config may have {limit} at most")
        chunks = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > limit:  # it grew while being read
                raise ConfigError(p, "", f"more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError(p, "", f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def load(path: str | Path) -> Config:
    """Reads and validates the config file at ``path``."""
    return parse(read(path), str(path))


def parse(raw: bytes, path: str = "<config>") -> Config:
    """Validates TOML ``raw`` (the contents of ``path``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"not UTF-8: {e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(path, "", f"TOML syntax: {e}", int(m.group(1)) if m else None) from None
    except RecursionError:
        raise ConfigError(path, "", "TOML syntax: arrays or tables nested too deep") from None
    r = _Reader(path, text)
    r.known(doc, "", {"interface", "route", "nat", "firewall", "conntrack", "control", "log",
                      "dataplane", "loadbalancer", "metrics", "service"})

    interfaces = _interfaces(r, doc)
    names = {i.name: i for i in interfaces}
    routes = _routes(r, doc, names)
    routes6 = _routes6(r, doc, names)
    nat = _nat(r, doc, names)
    policies, forward_default, input_default, fw_rules, (icmp_rate, src_cap, src_rate,
                                                         src_prefix6, src_share) = (
        _firewall(r, doc, {i.zone for i in interfaces}))
    lbs = _loadbalancers(r, doc, names, nat.forwards)
    ct = _conntrack(r, doc)
    log_drops, log_rate = _fw_log(r, doc)

    control = r.table(doc, "control", "")
    r.known(control, "control", {"socket"})
    sock = r.get(control, "socket", "control", str, "/run/router/router.sock")
    if not _plain_path(sock):
        raise r.fail("control.socket", "must be an absolute path without '..' or control "
                                       "characters")

    met = r.table(doc, "metrics", "")
    r.known(met, "metrics", {"listen"})
    listen = r.get(met, "listen", "metrics", str, "127.0.0.1:9188")
    if listen:
        m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[0-9.]+|[A-Za-z0-9.-]+):(\d{1,5})", listen)
        if not m or not 0 <= int(m.group(2)) <= 65535:
            raise r.fail("metrics.listen", "must be ADDRESS:PORT like '127.0.0.1:9188' "
                         "(or empty to turn metrics off)")

    log = r.table(doc, "log", "")
    r.known(log, "log", {"level", "format", "output"})
    level = r.choice(log, "level", "log", LOG_LEVELS, "info")
    fmt = r.choice(log, "format", "log", LOG_FORMATS, "auto")
    output = r.choice(log, "output", "log", ("stderr", "stdout"), "stderr")

    dpl = r.table(doc, "dataplane", "")
    r.known(dpl, "dataplane", {"batch", "offload", "tun_device", "busy_poll", "queues",
                               "workers", "syn_queue"})
    batch = r.integer(dpl, "batch", "dataplane", 64, 1, 1024)
    offload = r.get(dpl, "offload", "dataplane", bool, True)
    tun_device = r.get(dpl, "tun_device", "dataplane", str, "/dev/net/tun")
    busy_poll = r.integer(dpl, "busy_poll", "dataplane", 0, 0, 10_000_000)
    queues = r.integer(dpl, "queues", "dataplane", 1, 1, 64)
    workers = r.get(dpl, "workers", "dataplane", bool, True)
    syn_queue = r.get(dpl, "syn_queue", "dataplane", bool, True)
    if not _plain_path(tun_device):
        raise r.fail("dataplane.tun_device", "must be an absolute path without '..' or control "
                                             "characters")

    svc = r.table(doc, "service", "")
    r.known(svc, "service", {"user", "group", "keep_net_admin"})
    user = r.get(svc, "user", "service", str, "")
    group = r.get(svc, "group", "service", str, "")
    for k, v in (("user", user), ("group", group)):
        if v and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?", v):
            raise r.fail(f"service.{k}", f"not a user or group name: {v!r}")
    if group and not user:
        raise r.fail("service.group", "needs service.user")
    keep_na = r.get(svc, "keep_net_admin", "service", bool, True)

    return Config(path=path, sha256=hashlib.sha256(raw).hexdigest(), metrics_listen=listen,
                  interfaces=interfaces, routes=routes, routes6=routes6, nat=nat, policies=policies,
                  loadbalancers=lbs, input_default=input_default, rules=fw_rules,
                  icmp_rate=icmp_rate, max_conns_per_source=src_cap,
                  source_prefix6=src_prefix6, source_share=src_share,
                  new_conns_per_source=src_rate, log_drops=log_drops, log_rate=log_rate,
                  forward_default=forward_default, conntrack=ct, control_socket=sock,
                  log_level=level, log_format=fmt, batch=batch, offload=offload,
                  tun_device=tun_device, busy_poll=busy_poll, queues=queues, workers=workers,
                  syn_queue=syn_queue,
                  log_output=output, user=user,
                  group=group, keep_net_admin=keep_na)


def _interfaces(r: _Reader, doc: Mapping[str, Any]) -> tuple[Interface, ...]:
    raw = r.array(doc, "interface", "")
    if not raw:
        raise r.fail("interface", "at least one [[interface]] is required")
    if len(raw) > MAX_INTERFACES:
        raise r.fail("interface", f"at most {MAX_INTERFACES} interfaces")
    out: list[Interface] = []
    seen_names: set[str] = set()
    nets: list[tuple[str, IPv4Network]] = []
    nets6: list[tuple[str, IPv6Network]] = []
    keys = {"name", "address", "zone", "mtu", "txqueuelen", "netns", "host_address",
            "host_routes", "rp_filter", "precreated", "address6", "host_address6",
            "host_routes6"}
    for w, t in r.tables(doc, "interface", ""):
        r.known(t, w, keys)
        name = r.get(t, "name", w, str, required=True)
        if not IFNAME_RE.fullmatch(name):
            raise r.fail(f"{w}.name", "must be 1-15 letters, digits, '_', '.' or '-'")
        if name in seen_names:
            raise r.fail(f"{w}.name", f"duplicate interface name {name!r}")
        seen_names.add(name)
        addr = r.iface_addr(r.get(t, "address", w, str, required=True), f"{w}.address")
        for other, net in nets:
            if net.overlaps(addr.network):
                raise r.fail(f"{w}.address", f"{addr.network} overlaps the network of {other}")
        nets.append((name, addr.network))
        zone = r.get(t, "zone", w, str, required=True)
        if not ZONE_RE.fullmatch(zone):
            raise r.fail(f"{w}.zone", "must start with a letter: letters, digits, '_' or '-'")
        mtu = r.integer(t, "mtu", w, 1500, 576, 65535)
        txq = r.integer(t, "txqueuelen", w, TXQUEUELEN, 1, 1_000_000)
        netns = r.get(t, "netns", w, str)
        if netns is not None and not NETNS_RE.fullmatch(netns):
            raise r.fail(f"{w}.netns", "must be a network namespace name (letters, digits, _.-)")
        host = None
        if "host_address" in t:
            host = r.iface_addr(t["host_address"], f"{w}.host_address")
            if host.network != addr.network:
                raise r.fail(f"{w}.host_address", f"must be in {addr.network}, the link's network")
            if host.ip == addr.ip:
                raise r.fail(f"{w}.host_address", "must differ from the router's own address")
        hroutes = tuple(
            r.network(v, f"{w}.host_routes[{k}]")
            for k, v in enumerate(r.get(t, "host_routes", w, list, []))
        )
        if hroutes and host is None:
            raise r.fail(f"{w}.host_routes", "needs host_address")
        rpf = r.choice(t, "rp_filter", w, ("strict", "loose", "off"), "strict")
        pre = r.get(t, "precreated", w, bool, False)
        if pre and (netns is not None or host is not None):
            raise r.fail(f"{w}.precreated", "a pre-created device is set up by whoever created "
                         "it: netns and host_address do not apply")
        addr6 = host6 = None
        if "address6" in t:
            addr6 = _iface6(r, t["address6"], f"{w}.address6")
            for other, net6 in nets6:
                if net6.overlaps(addr6.network):
                    raise r.fail(f"{w}.address6", f"{addr6.network} overlaps the network of "
                                 f"{other}")
            nets6.append((name, addr6.network))
        if "host_address6" in t:
            if addr6 is None:
                raise r.fail(f"{w}.host_address6", "needs address6")
            host6 = _iface6(r, t["host_address6"], f"{w}.host_address6")
            if host6.network != addr6.network or host6.ip == addr6.ip:
                raise r.fail(f"{w}.host_address6", f"must be another address in {addr6.network}")
        hroutes6 = tuple(_net6(r, v, f"{w}.host_routes6[{k}]")
                         for k, v in enumerate(r.get(t, "host_routes6", w, list, [])))
        if hroutes6 and host6 is None:
            raise r.fail(f"{w}.host_routes6", "needs host_address6")
        if pre and host6 is not None:
            raise r.fail(f"{w}.precreated", "host_address6 does not apply to a pre-created "
                         "device")
        if mtu < 1280 and addr6 is not None:
            raise r.fail(f"{w}.mtu", "IPv6 needs an MTU of at least 1280 (RFC 8200 5)")
        out.append(Interface(name=name, address=addr, zone=zone, mtu=mtu, txqueuelen=txq,
                             netns=netns, host_address=host, host_routes=hroutes,
                             rp_filter=rpf, precreated=pre, address6=addr6,
                             host_address6=host6, host_routes6=hroutes6))
    if len({i.zone for i in out}) > MAX_ZONES:
        raise r.fail("interface", f"at most {MAX_ZONES} zones")
    return tuple(out)


def _iface6(r: _Reader, val: Any, key: str) -> IPv6Interface:
    if not isinstance(val, str) or "/" not in val:
        raise r.fail(key, "must be an IPv6 address with a prefix length, like '2001:db8:1::1/64'")
    try:
        return IPv6Interface(val)
    except ValueError as e:
        raise r.fail(key, f"not an IPv6 address: {e}") from None


def _net6(r: _Reader, val: Any, key: str) -> IPv6Network:
    if not isinstance(val, str):
        raise r.fail(key, "must be a string like '2001:db8::/32'")
    try:
        return IPv6Network(val, strict=True)
    except ValueError as e:
        raise r.fail(key, f"not an IPv6 network: {e}") from None


def _any_net(r: _Reader, val: Any, key: str) -> IPv4Network | IPv6Network:
    """An IPv4 or an IPv6 network (a rule matches packets of its family)."""
    if isinstance(val, str) and ":" in val:
        return _net6(r, val, key)
    return r.network(val, key)


def _routes6(r: _Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]
             ) -> tuple[Route6, ...]:
    out: list[Route6] = []
    seen: set[IPv6Network] = set()
    for w, t in r.tables(doc, "route", ""):
        dest = t.get("destination")
        if not isinstance(dest, str) or ":" not in dest:
            continue
        r.known(t, w, {"destination", "interface", "gateway"})
        net = _net6(r, dest, f"{w}.destination")
        iface = r.get(t, "interface", w, str, required=True)
        if iface not in ifaces:
            raise r.fail(f"{w}.interface", f"no interface named {iface!r}")
        if ifaces[iface].address6 is None:
            raise r.fail(f"{w}.interface", f"{iface} has no address6")
        if "gateway" in t:
            raise r.fail(f"{w}.gateway", "IPv6 routes name only their interface (a TUN link "
                         "has no neighbours to choose between)")
        if net in seen:
            raise r.fail(f"{w}.destination", f"duplicate route for {net}")
        seen.add(net)
        out.append(Route6(destination=net, interface=iface))
    return tuple(out)


def _routes(r: _Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]
            ) -> tuple[Route, ...]:
    out: list[Route] = []
    seen: set[IPv4Network] = set()
    for w, t in r.tables(doc, "route", ""):
        if isinstance(t.get("destination"), str) and ":" in t["destination"]:
            continue  # IPv6: _routes6
        r.known(t, w, {"destination", "interface", "gateway"})
        dest = r.network(r.get(t, "destination", w, str, required=True), f"{w}.destination")
        iface = r.get(t, "interface", w, str)
        gw = r.address(t["gateway"], f"{w}.gateway") if "gateway" in t else None
        if iface is None and gw is None:
            raise r.fail(w, "needs an interface, a gateway, or both")
        if iface is not None and iface not in ifaces:
            raise r.fail(f"{w}.interface", f"no interface named {iface!r}")
        if gw is not None:
            on = [i for i in ifaces.values() if gw in i.address.network]
            if not on:
                raise r.fail(f"{w}.gateway", f"{gw} is not on any interface's network")
            if iface is not None and on[0].name != iface:
                raise r.fail(f"{w}.gateway", f"{gw} is not on {iface}'s network")
            if any(gw == i.address.ip for i in ifaces.values()):
                raise r.fail(f"{w}.gateway", f"{gw} is the router's own address")
        if dest in seen:
            raise r.fail(f"{w}.destination", f"duplicate route for {dest}")
        seen.add(dest)
        out.append(Route(destination=dest, interface=iface, gateway=gw))
    return tuple(out)


def _nat(r: _Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]) -> Nat:
    t = r.table(doc, "nat", "")
    r.known(t, "nat", {"port_min", "port_max", "preserve_ports", "masquerade", "snat",
                       "forward", "mapping", "filtering", "npt6", "masquerade6"})
    mapping = r.choice(t, "mapping", "nat", MAPPINGS, "endpoint-independent")
    filtering = r.choice(t, "filtering", "nat", FILTERINGS, "address-dependent")
    pmin = r.integer(t, "port_min", "nat", 1024, 1, 65535)
    pmax = r.integer(t, "port_max", "nat", 65535, 1, 65535)
    if pmin > pmax:
        raise r.fail("nat.port_min", f"must not exceed port_max ({pmax})")
    preserve = r.get(t, "preserve_ports", "nat", bool, True)
    rules: list[SourceNat] = []
    for kind in ("snat", "masquerade"):
        for w, rt in r.tables(t, kind, "nat"):
            r.known(rt, w, {"interface", "sources", "to"} if kind == "snat"
                    else {"interface", "sources"})
            iface = r.interface(rt, w, ifaces)
            srcs = tuple(r.network(v, f"{w}.sources[{k}]")
                         for k, v in enumerate(r.get(rt, "sources", w, list, [])))
            to = None
            pool: tuple[IPv4Address, ...] = ()
            if kind == "snat":
                val = r.get(rt, "to", w, (str, list), required=True)
                if isinstance(val, list):
                    if not val:
                        raise r.fail(f"{w}.to", "needs at least one address")
                    pool = tuple(r.address(v, f"{w}.to[{k}]") for k, v in enumerate(val))
                    if len(set(pool)) != len(pool):
                        raise r.fail(f"{w}.to", "lists an address twice")
                    to = pool[0]
                    if len(pool) == 1:
                        pool = ()
                else:
                    to = r.address(val, f"{w}.to")
            rules.append(SourceNat(interface=iface, sources=srcs, to=to, pool=pool))
    forwards = _forwards(r, t, ifaces)
    npt6: list[Npt6] = []
    for w, x in r.tables(t, "npt6", "nat"):
        r.known(x, w, {"interface", "inside", "outside"})
        name = r.get(x, "interface", w, str, required=True)
        if name not in ifaces:
            raise r.fail(f"{w}.interface", f"no interface named {name!r}")
        if ifaces[name].address6 is None:
            raise r.fail(f"{w}.interface", f"{name} has no address6")
        inside = _net6(r, r.get(x, "inside", w, str, required=True), f"{w}.inside")
        outside = _net6(r, r.get(x, "outside", w, str, required=True), f"{w}.outside")
        if inside.prefixlen != outside.prefixlen or not 1 <= inside.prefixlen <= 48:
            raise r.fail(w, "inside and outside must have the same prefix length, /1 to /48 "
                         "(the checksum-neutral adjustment uses bits 48-63, RFC 6296 3.2)")
        if inside.overlaps(outside):
            raise r.fail(f"{w}.outside", "must not overlap the inside prefix")
        npt6.append(Npt6(interface=name, inside=inside, outside=outside))
    masq6: list[Masquerade6] = []
    for w, x in r.tables(t, "masquerade6", "nat"):
        r.known(x, w, {"interface", "sources"})
        name = r.get(x, "interface", w, str, required=True)
        if name not in ifaces:
            raise r.fail(f"{w}.interface", f"no interface named {name!r}")
        if ifaces[name].address6 is None:
            raise r.fail(f"{w}.interface", f"{name} has no address6 to masquerade to")
        srcs6 = tuple(_net6(r, v, f"{w}.sources[{k}]")
                      for k, v in enumerate(r.get(x, "sources", w, list, [])))
        masq6.append(Masquerade6(interface=name, sources=srcs6))
    return Nat(port_min=pmin, port_max=pmax, preserve_ports=preserve, mapping=mapping,
               filtering=filtering, rules=tuple(rules), forwards=forwards, npt6=tuple(npt6),
               masquerade6=tuple(masq6))


def _port_range(r: _Reader, val: Any, key: str) -> tuple[int, int]:
    if isinstance(val, int) and not isinstance(val, bool):
        lo = hi = val
    elif isinstance(val, str) and re.fullmatch(r"\d+-\d+", val):
        lo, hi = (int(x) for x in val.split("-"))
    else:
        raise r.fail(key, "must be a port (8080) or a range ('8000-8010')")
    if not 1 <= lo <= hi <= 65535:
        raise r.fail(key, f"ports must be 1-65535 and ascending, got {val!r}")
    return lo, hi


def _forwards(r: _Reader, t: Mapping[str, Any], ifaces: Mapping[str, Interface]
              ) -> tuple[PortForward, ...]:
    out: list[PortForward] = []
    own = {i.address.ip for i in ifaces.values()}
    for w, f in r.tables(t, "forward", "nat"):
        r.known(f, w, {"interface", "address", "protocol", "port", "to", "to_port",
                       "masquerade"})
        iface = r.interface(f, w, ifaces)
        addr = (r.address(f["address"], f"{w}.address") if "address" in f
                else ifaces[iface].address.ip)
        protos = r.choice(f, "protocol", w, ("tcp", "udp", "both"), "tcp")
        if "port" not in f:
            raise r.fail(f"{w}.port", "is required")
        lo, hi = _port_range(r, f["port"], f"{w}.port")
        to = r.address(r.get(f, "to", w, str, required=True), f"{w}.to")
        if to in own:
            raise r.fail(f"{w}.to", f"{to} is one of the router's own addresses")
        to_port = r.integer(f, "to_port", w, lo, 1, 65535)
        if to_port + (hi - lo) > 65535:
            raise r.fail(f"{w}.to_port", f"the range {lo}-{hi} from {to_port} passes 65535")
        masq = r.get(f, "masquerade", w, bool, False)
        for proto in (("tcp", "udp") if protos == "both" else (protos,)):
            for o in out:
                if o.protocol == proto and o.address == addr and not (
                        hi < o.port_min or lo > o.port_max):
                    raise r.fail(f"{w}.port", f"{proto} {addr} ports {lo}-{hi} overlap "
                                 f"another forward ({o.port_min}-{o.port_max})")
            out.append(PortForward(interface=iface, address=addr, protocol=proto,
                                   port_min=lo, port_max=hi, to=to, to_port=to_port,
                                   masquerade=masq))
    return tuple(out)


def _loadbalancers(r: _Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface],
                   forwards: tuple[PortForward, ...]) -> tuple[LoadBalancer, ...]:
    out: list[LoadBalancer] = []
    own = {i.address.ip for i in ifaces.values()}
    for w, t in r.tables(doc, "loadbalancer", ""):
        r.known(t, w, {"name", "interface", "address", "protocol", "port", "masquerade",
                       "backend"})
        name = r.get(t, "name", w, str, required=True)
        if not ZONE_RE.fullmatch(name) or any(lb.name == name for lb in out):
            raise r.fail(f"{w}.name", "must be a unique name (letters, digits, '_', '-')")
        iface = r.interface(t, w, ifaces)
        addr = (r.address(t["address"], f"{w}.address") if "address" in t
                else ifaces[iface].address.ip)
        proto = r.choice(t, "protocol", w, ("tcp", "udp"), "tcp")
        if "port" not in t:
            raise r.fail(f"{w}.port", "is required")
        port = r.integer(t, "port", w, 0, 1, 65535)
        masq = r.get(t, "masquerade", w, bool, False)
        backends: list[Backend] = []
        for bw, b in r.tables(t, "backend", w):
            r.known(b, bw, {"address", "port", "weight"})
            baddr = r.address(r.get(b, "address", bw, str, required=True), f"{bw}.address")
            if baddr in own:
                raise r.fail(f"{bw}.address", f"{baddr} is one of the router's own addresses")
            bport = r.integer(b, "port", bw, port, 1, 65535)
            weight = r.integer(b, "weight", bw, 1, 1, 100)
            if any(x.address == baddr and x.port == bport for x in backends):
                raise r.fail(bw, f"duplicate backend {baddr}:{bport}")
            backends.append(Backend(baddr, bport, weight))
        if not backends:
            raise r.fail(f"{w}.backend", "at least one [[loadbalancer.backend]] is required")
        clash = [f for f in forwards if f.protocol == proto and f.address == addr
                 and f.port_min <= port <= f.port_max]
        clash_lb = [lb for lb in out if lb.protocol == proto and lb.address == addr
                    and lb.port == port]
        if clash or clash_lb:
            raise r.fail(f"{w}.port", f"{proto} {addr}:{port} is already forwarded")
        out.append(LoadBalancer(name, iface, addr, proto, port, tuple(backends), masq))
    return tuple(out)


PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "gre": 47}
STATES = ("new", "established", "related")


def _firewall(r: _Reader, doc: Mapping[str, Any], zones: set[str]
              ) -> tuple[tuple[Policy, ...], str, str, tuple[Rule, ...],
                         tuple[int, int, int, int, int]]:
    t = r.table(doc, "firewall", "")
    r.known(t, "firewall", {"forward", "input", "policy", "rule", "icmp_rate",
                            "max_connections_per_source", "new_connections_per_source",
                            "source_prefix6", "source_share", "log", "log_reasons",
                            "log_rate"})
    default = r.choice(t, "forward", "firewall", ACTIONS, "drop")
    input_default = r.choice(t, "input", "firewall", ("accept", "drop", "reject"), "accept")
    out: list[Policy] = []

    def zone(tbl: Mapping[str, Any], key: str, w: str, required: bool) -> str | None:
        z = r.get(tbl, key, w, str, required=required)
        if z is None:
            return None
        if z not in zones:
            raise r.fail(f"{w}.{key}", f"no interface is in zone {z!r} "
                         f"(zones: {', '.join(sorted(zones))})")
        return str(z)

    for w, p in r.tables(t, "policy", "firewall"):
        r.known(p, w, {"from", "to", "action"})
        src = zone(p, "from", w, True)
        dst = zone(p, "to", w, True)
        action = r.choice(p, "action", w, ACTIONS, "accept")
        if any(x.from_zone == src and x.to_zone == dst for x in out):
            raise r.fail(w, f"duplicate policy for {src} -> {dst}")
        out.append(Policy(from_zone=str(src), to_zone=str(dst), action=action))

    rules: list[Rule] = []
    for w, p in r.tables(t, "rule", "firewall"):
        r.known(p, w, {"chain", "action", "from", "to", "source", "destination", "protocol",
                       "port", "icmp_type", "state", "comment"})
        chain = r.choice(p, "chain", w, ("forward", "input"), "forward")
        action = r.choice(p, "action", w, ("accept", "drop", "reject"), "accept")
        if "action" not in p:
            raise r.fail(f"{w}.action", "is required")
        src_zone = zone(p, "from", w, False)
        dst_zone = zone(p, "to", w, False)
        if dst_zone is not None and chain == "input":
            raise r.fail(f"{w}.to", "the input chain has no output zone")
        source = _any_net(r, p["source"], f"{w}.source") if "source" in p else None
        dest = (_any_net(r, p["destination"], f"{w}.destination") if "destination" in p
                else None)
        if source is not None and dest is not None and source.version != dest.version:
            raise r.fail(f"{w}.destination", "source and destination must both be IPv4 or "
                         "both IPv6")
        proto = 0
        if "protocol" in p:
            val = p["protocol"]
            if isinstance(val, str) and val in PROTOCOLS:
                proto = PROTOCOLS[val]
            elif isinstance(val, int) and not isinstance(val, bool) and 1 <= val <= 255:
                proto = val
            else:
                raise r.fail(f"{w}.protocol", f"must be one of {', '.join(PROTOCOLS)} "
                             "or a protocol number 1-255")
        lo = hi = 0
        if "port" in p:
            if proto not in (6, 17):
                raise r.fail(f"{w}.port", "needs protocol tcp or udp")
            lo, hi = _port_range(r, p["port"], f"{w}.port")
        icmp_type = None
        if "icmp_type" in p:
            if proto != 1:
                raise r.fail(f"{w}.icmp_type", "needs protocol icmp")
            icmp_type = r.integer(p, "icmp_type", w, 0, 0, 255)
        states = r.get(p, "state", w, list, [])
        for k, s in enumerate(states):
            if s not in STATES:
                raise r.fail(f"{w}.state[{k}]", f"must be one of {', '.join(STATES)}")
        comment = r.get(p, "comment", w, str, "")
        rules.append(Rule(chain=chain, action=action, from_zone=src_zone, to_zone=dst_zone,
                          source=source, destination=dest, protocol=proto, port_min=lo,
                          port_max=hi, icmp_type=icmp_type, states=tuple(states),
                          comment=comment))
    icmp_rate = r.integer(t, "icmp_rate", "firewall", 1000, 0, 1_000_000)
    cap = r.integer(t, "max_connections_per_source", "firewall", 0, 0, 1 << 26)
    rate = r.integer(t, "new_connections_per_source", "firewall", NEW_CONNS_PER_SOURCE, 0,
                     1_000_000)
    prefix6 = r.integer(t, "source_prefix6", "firewall", 128, 1, 128)
    share = r.integer(t, "source_share", "firewall", SOURCE_SHARE, 0, 100)
    return tuple(out), default, input_default, tuple(rules), (icmp_rate, cap, rate, prefix6,
                                                               share)


# Drops logged with `firewall.log = true` unless `log_reasons` says otherwise:
# the ones a firewall decides, not malformed packets.
DEFAULT_LOG_REASONS = ("firewall_drop", "firewall_reject", "policy", "spoofed_source",
                       "source_conn_limit", "source_rate_limit", "source_share", "ct_invalid",
                       "tcp_out_of_window", "tcp_invalid_rst", "bad_tcp_flags")


def _fw_log(r: _Reader, doc: Mapping[str, Any]) -> tuple[tuple[str, ...], int]:
    t = r.table(doc, "firewall", "")
    on = r.get(t, "log", "firewall", bool, False)
    reasons = r.get(t, "log_reasons", "firewall", list, list(DEFAULT_LOG_REASONS))
    for x in reasons:
        if x not in DROP_NAMES or x == "none":
            raise r.fail("firewall.log_reasons",
                         f"unknown drop reason {x!r} (known: {', '.join(DROP_NAMES[1:])})")
    rate = r.integer(t, "log_rate", "firewall", 10, 1, 100_000)
    return (tuple(dict.fromkeys(reasons)) if on else ()), rate


def _plain_path(p: str) -> bool:
    """Absolute, no '..' component, no control character (a path with a
    newline or form feed in it is a mistake, and does not survive being
    written back by `routerctl config show`)."""
    return (p.startswith("/") and ".." not in p.split("/") and
            not any(ord(c) < 32 or ord(c) == 127 for c in p))


def _conntrack(r: _Reader, doc: Mapping[str, Any]) -> Conntrack:
    t = r.table(doc, "conntrack", "")
    r.known(t, "conntrack", {"max", "tcp_loose", "tcp_liberal", "tcp_max_retrans", "checksum",
                             "timeouts", "gc_interval", "state_file", "state_key"})
    state_file = r.get(t, "state_file", "conntrack", str, STATE_FILE)
    if state_file and not _plain_path(state_file):
        raise r.fail("conntrack.state_file", "must be an absolute path without '..' or control "
                                             "characters (or empty: no state)")
    state_key = r.get(t, "state_key", "conntrack", str, STATE_KEY)
    if not _plain_path(state_key):
        raise r.fail("conntrack.state_key", "must be an absolute path without '..' or control "
                                            "characters")
    if state_file and (os.path.dirname(state_key) + "/").startswith(
            os.path.dirname(state_file) + "/"):
        raise r.fail("conntrack.state_key", "must not be in the state file's directory "
                     "(which the service user may write): use one only root can")
    mx = r.integer(t, "max", "conntrack", 65536, 16, 1 << 26)
    loose = r.get(t, "tcp_loose", "conntrack", bool, True)
    liberal = r.get(t, "tcp_liberal", "conntrack", bool, False)
    max_retrans = r.integer(t, "tcp_max_retrans", "conntrack", 3, 1, 15)
    csum = r.get(t, "checksum", "conntrack", bool, True)
    gci = r.get(t, "gc_interval", "conntrack", (int, float), 5.0)
    if not 0.1 <= gci <= 300:
        raise r.fail("conntrack.gc_interval", f"must be between 0.1 and 300 seconds, got {gci}")
    to = r.table(t, "timeouts", "conntrack")
    r.known(to, "conntrack.timeouts", set(TIMEOUT_DEFAULTS))
    timeouts = dict(TIMEOUT_DEFAULTS)
    for k in to:
        timeouts[k] = r.integer(to, k, "conntrack.timeouts", 0, 1, MAX_TIMEOUT)
    return Conntrack(max_entries=mx, tcp_loose=loose, tcp_liberal=liberal,
                     tcp_max_retrans=max_retrans, checksum=csum, timeouts=timeouts,
                     gc_interval=float(gci), state_file=state_file, state_key=state_key)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain TOML-ready data, every default filled in: what
    ``routerctl config show`` prints (written with the ``toml`` package)."""
    def iface(i: Interface) -> dict[str, Any]:
        d: dict[str, Any] = {"name": i.name, "address": str(i.address), "zone": i.zone,
                             "mtu": i.mtu, "txqueuelen": i.txqueuelen,
                             "rp_filter": i.rp_filter}
        if i.precreated:
            d["precreated"] = True
        if i.address6 is not None:
            d["address6"] = str(i.address6)
        if i.host_address6 is not None:
            d["host_address6"] = str(i.host_address6)
            d["host_routes6"] = [str(n) for n in i.host_routes6]
        if i.netns is not None:
            d["netns"] = i.netns
        if i.host_address is not None:
            d["host_address"] = str(i.host_address)
            d["host_routes"] = [str(n) for n in i.host_routes]
        return d

    def route(r: Route) -> dict[str, Any]:
        d: dict[str, Any] = {"destination": str(r.destination)}
        if r.interface is not None:
            d["interface"] = r.interface
        if r.gateway is not None:
            d["gateway"] = str(r.gateway)
        return d

    def nat_rule(n: SourceNat) -> dict[str, Any]:
        d: dict[str, Any] = {"interface": n.interface, "sources": [str(s) for s in n.sources]}
        if n.pool:
            d["to"] = [str(a) for a in n.pool]
        elif n.to is not None:
            d["to"] = str(n.to)
        return d

    return {
        "control": {"socket": cfg.control_socket},
        "metrics": {"listen": cfg.metrics_listen},
        "log": {"level": cfg.log_level, "format": cfg.log_format, "output": cfg.log_output},
        "dataplane": {"batch": cfg.batch, "offload": cfg.offload, "tun_device": cfg.tun_device,
                      "busy_poll": cfg.busy_poll, "queues": cfg.queues,
                      "workers": cfg.workers, "syn_queue": cfg.syn_queue},
        "service": {"user": cfg.user, "group": cfg.group,
                    "keep_net_admin": cfg.keep_net_admin},
        "conntrack": {"max": cfg.conntrack.max_entries, "tcp_loose": cfg.conntrack.tcp_loose,
                      "tcp_liberal": cfg.conntrack.tcp_liberal,
                      "tcp_max_retrans": cfg.conntrack.tcp_max_retrans,
                      "checksum": cfg.conntrack.checksum,
                      "gc_interval": cfg.conntrack.gc_interval,
                      "state_file": cfg.conntrack.state_file,
                      "state_key": cfg.conntrack.state_key,
                      "timeouts": dict(cfg.conntrack.timeouts)},
        "nat": {"port_min": cfg.nat.port_min, "port_max": cfg.nat.port_max,
                "preserve_ports": cfg.nat.preserve_ports,
                "mapping": cfg.nat.mapping, "filtering": cfg.nat.filtering,
                "snat": [nat_rule(n) for n in cfg.nat.rules if n.to is not None],
                "masquerade": [nat_rule(n) for n in cfg.nat.rules if n.to is None],
                "forward": [{"interface": f.interface, "address": str(f.address),
                             "protocol": f.protocol,
                             "port": f.port_min if f.port_min == f.port_max
                             else f"{f.port_min}-{f.port_max}",
                             "to": str(f.to), "to_port": f.to_port,
                             "masquerade": f.masquerade} for f in cfg.nat.forwards],
                "npt6": [{"interface": n.interface, "inside": str(n.inside),
                          "outside": str(n.outside)} for n in cfg.nat.npt6],
                "masquerade6": [{"interface": n.interface, "sources": [str(s) for s in n.sources]}
                                for n in cfg.nat.masquerade6]},
        "firewall": {"forward": cfg.forward_default, "input": cfg.input_default,
                     "icmp_rate": cfg.icmp_rate,
                     "max_connections_per_source": cfg.max_conns_per_source,
                     "new_connections_per_source": cfg.new_conns_per_source,
                     "source_prefix6": cfg.source_prefix6,
                     "source_share": cfg.source_share,
                     "log": bool(cfg.log_drops), "log_reasons": list(cfg.log_drops or
                                                                      DEFAULT_LOG_REASONS),
                     "log_rate": cfg.log_rate,
                     "policy": [{"from": p.from_zone, "to": p.to_zone, "action": p.action}
                                for p in cfg.policies],
                     "rule": [rule_dict(x) for x in cfg.rules]},
        "loadbalancer": [{"name": lb.name, "interface": lb.interface,
                          "address": str(lb.address), "protocol": lb.protocol,
                          "port": lb.port, "masquerade": lb.masquerade,
                          "backend": [{"address": str(b.address), "port": b.port,
                                       "weight": b.weight} for b in lb.backends]}
                         for lb in cfg.loadbalancers],
        "interface": [iface(i) for i in cfg.interfaces],
        "route": [route(r) for r in cfg.routes] + [
            {"destination": str(r.destination), "interface": r.interface} for r in cfg.routes6],
    }


def rule_dict(x: Rule) -> dict[str, Any]:
    """A firewall rule as TOML-ready data (only the keys that are set)."""
    names = {v: k for k, v in PROTOCOLS.items()}
    d: dict[str, Any] = {"chain": x.chain, "action": x.action}
    if x.from_zone is not None:
        d["from"] = x.from_zone
    if x.to_zone is not None:
        d["to"] = x.to_zone
    if x.source is not None:
        d["source"] = str(x.source)
    if x.destination is not None:
        d["destination"] = str(x.destination)
    if x.protocol:
        d["protocol"] = names.get(x.protocol, x.protocol)
    if x.port_min:
        d["port"] = x.port_min if x.port_min == x.port_max else f"{x.port_min}-{x.port_max}"
    if x.icmp_type is not None:
        d["icmp_type"] = x.icmp_type
    if x.states:
        d["state"] = list(x.states)
    if x.comment:
        d["comment"] = x.comment
    return d
