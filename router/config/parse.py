"""TOML text in, a checked ``Config`` out: the document, its scalar sections,
interfaces, routes and the conntrack table (``rules.py`` reads NAT, load
balancers and the firewall, ``reader.py`` walks the document).

Parsing is all-or-nothing: every key is checked before ``parse()`` returns,
and any problem raises ``ConfigError`` naming the file, the key
(``interface[1].address``), the line where that key sits when it can be
found, and the reason.  Defaults, ranges and choices come from the model.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from typing import Any

from router.config.ha import ha_section
from router.config.ipfix import ipfix_section
from router.config.lan import host_link, lan_section, lan_services
from router.config.model import (
    IFNAME_RE,
    MAX_INTERFACES,
    MAX_TIMEOUT,
    MAX_ZONES,
    NETNS_RE,
    UNADDRESSED,
    ZONE_RE,
    Config,
    ConfigError,
    Conntrack,
    Control,
    Dataplane,
    Interface,
    Log,
    Metrics,
    Route,
    Route6,
    Service,
)
from router.config.portmap import portmap_section
from router.config.reader import Reader, iface6, net6, plain_path
from router.config.rules import firewall, loadbalancers, nat
from router.native.names import TIMEOUT_DEFAULTS


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
    r = Reader(path, text)
    r.known(doc, "", {"interface", "route", "nat", "firewall", "conntrack", "control", "log",
                      "dataplane", "loadbalancer", "metrics", "service", "lan", "portmap",
                      "ha", "ipfix"})
    interfaces = _interfaces(r, doc)
    lan = lan_section(r, doc)
    hl = host_link(r, lan, interfaces)
    if hl is not None:
        interfaces += (hl,)
    names = {i.name: i for i in interfaces}
    routes = _routes(r, doc, names)
    routes6 = _routes6(r, doc, names)
    the_nat = nat(r, doc, names)
    fw = firewall(r, doc, {i.zone for i in interfaces})
    lbs = loadbalancers(r, doc, names, the_nat.forwards)
    service = _service(r, doc)
    portmap = portmap_section(r, doc, interfaces)
    return Config(path=path, sha256=hashlib.sha256(raw).hexdigest(), interfaces=interfaces,
                  routes=routes, routes6=routes6, nat=the_nat, firewall=fw, loadbalancers=lbs,
                  conntrack=_conntrack(r, doc), control=_control(r, doc),
                  metrics=_metrics(r, doc), log=Log(**r.section(doc, "log", Log)[1]),
                  dataplane=_dataplane(r, doc), service=service, lan=lan,
                  portmap=portmap, ha=ha_section(r, doc, interfaces),
                  ipfix=ipfix_section(r, doc))


def _control(r: Reader, doc: Mapping[str, Any]) -> Control:
    _, v = r.section(doc, "control", Control)
    _check_path(r, v["socket"], "control.socket")
    return Control(**v)


def _check_path(r: Reader, path: str, key: str, alternative: str = "") -> None:
    if not plain_path(path):
        raise r.fail(key, "must be an absolute path without '..' or control characters"
                     + alternative)


def _metrics(r: Reader, doc: Mapping[str, Any]) -> Metrics:
    _, v = r.section(doc, "metrics", Metrics)
    if v["listen"]:
        m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[0-9.]+|[A-Za-z0-9.-]+):(\d{1,5})", v["listen"])
        if not m or not 0 <= int(m.group(2)) <= 65535:
            raise r.fail("metrics.listen", "must be ADDRESS:PORT like '127.0.0.1:9188' "
                         "(or empty to turn metrics off)")
    return Metrics(**v)


def _dataplane(r: Reader, doc: Mapping[str, Any]) -> Dataplane:
    _, v = r.section(doc, "dataplane", Dataplane)
    _check_path(r, v["tun_device"], "dataplane.tun_device")
    return Dataplane(**v)


def _service(r: Reader, doc: Mapping[str, Any]) -> Service:
    _, v = r.section(doc, "service", Service)
    for k in ("user", "group"):
        if v[k] and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?", v[k]):
            raise r.fail(f"service.{k}", f"not a user or group name: {v[k]!r}")
    if v["group"] and not v["user"]:
        raise r.fail("service.group", "needs service.user")
    return Service(**v)


def _interfaces(r: Reader, doc: Mapping[str, Any]) -> tuple[Interface, ...]:
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
            "host_routes6", "attach", "lan", "kernel_multicast"}
    for w, t in r.tables(doc, "interface", ""):
        r.known(t, w, keys)
        name = r.get(t, "name", w, str, required=True)
        if not IFNAME_RE.fullmatch(name):
            raise r.fail(f"{w}.name", "must be 1-15 letters, digits, '_', '.' or '-'")
        if name in seen_names:
            raise r.fail(f"{w}.name", f"duplicate interface name {name!r}")
        seen_names.add(name)
        given = r.get(t, "address", w, str, required=True)
        dhcp = given == "dhcp"
        if dhcp:
            if "attach" not in t:
                raise r.fail(f"{w}.address", "an address by DHCP needs an attached interface "
                             "(attach), where the DHCP client runs")
            addr = UNADDRESSED
        else:
            addr = r.iface_addr(given, f"{w}.address")
            for other, net in nets:
                if net.overlaps(addr.network):
                    raise r.fail(f"{w}.address",
                                 f"{addr.network} overlaps the network of {other}")
            nets.append((name, addr.network))
        zone = r.get(t, "zone", w, str, required=True)
        if not ZONE_RE.fullmatch(zone):
            raise r.fail(f"{w}.zone", "must start with a letter: letters, digits, '_' or '-'")
        mtu = r.knob(t, Interface, "mtu", w)
        txq = r.knob(t, Interface, "txqueuelen", w)
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
        rpf = r.knob(t, Interface, "rp_filter", w)
        pre = r.knob(t, Interface, "precreated", w)
        if pre and (netns is not None or host is not None):
            raise r.fail(f"{w}.precreated", "a pre-created device is set up by whoever created "
                         "it: netns and host_address do not apply")
        addr6 = host6 = None
        if "address6" in t:
            addr6 = iface6(r, t["address6"], f"{w}.address6")
            for other, other6 in nets6:
                if other6.overlaps(addr6.network):
                    raise r.fail(f"{w}.address6", f"{addr6.network} overlaps the network of "
                                 f"{other}")
            nets6.append((name, addr6.network))
        if "host_address6" in t:
            if addr6 is None:
                raise r.fail(f"{w}.host_address6", "needs address6")
            host6 = iface6(r, t["host_address6"], f"{w}.host_address6")
            if host6.network != addr6.network or host6.ip == addr6.ip:
                raise r.fail(f"{w}.host_address6", f"must be another address in {addr6.network}")
        hroutes6 = tuple(net6(r, v, f"{w}.host_routes6[{k}]")
                         for k, v in enumerate(r.get(t, "host_routes6", w, list, [])))
        if hroutes6 and host6 is None:
            raise r.fail(f"{w}.host_routes6", "needs host_address6")
        if pre and host6 is not None:
            raise r.fail(f"{w}.precreated", "host_address6 does not apply to a pre-created "
                         "device")
        if mtu < 1280 and addr6 is not None:
            raise r.fail(f"{w}.mtu", "IPv6 needs an MTU of at least 1280 (RFC 8200 5)")
        attach = _attach(r, t, w, name, [i.attach for i in out])
        lan = lan_services(r, t, w, addr, dhcp, addr6, attach)
        kmc = r.knob(t, Interface, "kernel_multicast", w)
        if kmc and attach is None:
            raise r.fail(f"{w}.kernel_multicast", "applies to an attached interface only")
        out.append(Interface(name=name, address=addr, zone=zone, mtu=mtu, txqueuelen=txq,
                             netns=netns, host_address=host, host_routes=hroutes,
                             rp_filter=rpf, precreated=pre, address6=addr6,
                             host_address6=host6, host_routes6=hroutes6, attach=attach,
                             dhcp=dhcp, lan=lan, kernel_multicast=kmc))
    if len({i.zone for i in out}) > MAX_ZONES:
        raise r.fail("interface", f"at most {MAX_ZONES} zones")
    return tuple(out)


def _attach(r: Reader, t: Mapping[str, Any], w: str, name: str,
            taken: list[str | None]) -> str | None:
    """The kernel interface an [[interface]] is attached to, if any: a
    network interface of the router's own namespace, whose IP packets the
    router takes (docs/deployment.md).  Its TUN device stays in that
    namespace, so none of the settings of a device given to a host apply."""
    attach = r.get(t, "attach", w, str)
    if attach is None:
        return None
    if not IFNAME_RE.fullmatch(attach):
        raise r.fail(f"{w}.attach", "must be an interface name (1-15 letters, digits, "
                     "'_', '.' or '-')")
    if attach == name:
        raise r.fail(f"{w}.attach", f"names the router's own TUN device {name!r}: give the "
                     "interface another name")
    if attach in taken:
        raise r.fail(f"{w}.attach", f"{attach!r} is attached to another interface already")
    given = [k for k in ("netns", "host_address", "host_routes", "host_address6",
                         "host_routes6", "precreated") if k in t]
    if given:
        raise r.fail(f"{w}.attach", f"an attached interface has no host on its TUN device: "
                     f"{', '.join(given)} do not apply")
    return str(attach)


def _routes6(r: Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]
             ) -> tuple[Route6, ...]:
    out: list[Route6] = []
    seen: set[IPv6Network] = set()
    for w, t in r.tables(doc, "route", ""):
        dest = t.get("destination")
        if not isinstance(dest, str) or ":" not in dest:
            continue
        r.known(t, w, {"destination", "interface", "gateway"})
        net = net6(r, dest, f"{w}.destination")
        iface = r.get(t, "interface", w, str, required=True)
        if iface not in ifaces:
            raise r.fail(f"{w}.interface", f"no interface named {iface!r}")
        if ifaces[iface].address6 is None:
            raise r.fail(f"{w}.interface", f"{iface} has no address6")
        gw = None
        if "gateway" in t:
            if ifaces[iface].attach is None:
                raise r.fail(f"{w}.gateway", "IPv6 routes through a TUN link name only their "
                             "interface (it has no neighbours to choose between); a gateway "
                             "needs an attached interface")
            gw = _address6(r, t["gateway"], f"{w}.gateway")
        if net in seen:
            raise r.fail(f"{w}.destination", f"duplicate route for {net}")
        seen.add(net)
        out.append(Route6(destination=net, interface=iface, gateway=gw))
    return tuple(out)


def _address6(r: Reader, val: Any, key: str) -> IPv6Address:
    """A unicast IPv6 address (a next hop: link-local ones are the usual)."""
    if not isinstance(val, str):
        raise r.fail(key, "must be a string like 'fe80::1'")
    try:
        addr = IPv6Address(val)
    except ValueError as e:
        raise r.fail(key, f"not an IPv6 address: {e}") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise r.fail(key, f"{addr} is not a unicast address")
    return addr


def _routes(r: Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]
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


def _conntrack(r: Reader, doc: Mapping[str, Any]) -> Conntrack:
    t, v = r.section(doc, "conntrack", Conntrack, frozenset({"timeouts"}))
    state_file, state_key = v["state_file"], v["state_key"]
    if state_file:
        _check_path(r, state_file, "conntrack.state_file", " (or empty: no state)")
    _check_path(r, state_key, "conntrack.state_key")
    if state_file and (os.path.dirname(state_key) + "/").startswith(
            os.path.dirname(state_file) + "/"):
        raise r.fail("conntrack.state_key", "must not be in the state file's directory "
                     "(which the service user may write): use one only root can")
    to = r.table(t, "timeouts", "conntrack")
    r.known(to, "conntrack.timeouts", set(TIMEOUT_DEFAULTS))
    timeouts = dict(TIMEOUT_DEFAULTS)
    for k in to:
        timeouts[k] = r.integer(to, k, "conntrack.timeouts", 0, 1, MAX_TIMEOUT)
    return Conntrack(timeouts=timeouts, **v)
