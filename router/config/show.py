"""A config shown back: as TOML-ready data with every default filled in
(``routerctl config show``), and the warnings about what is valid but unwise.
"""

from __future__ import annotations

from dataclasses import fields
from ipaddress import ip_address
from typing import Any

from router.config.model import PCP_PORT, PROTOCOLS, Config, Interface, Route, Rule, SourceNat


def _knobs(section: Any) -> dict[str, Any]:
    """The scalar keys of a section with their values (tuples as lists)."""
    return {f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
            for f in fields(section) if f.metadata.get("knob")}


def warnings(cfg: Config) -> list[str]:
    """What is valid but probably unwise, for ``router check`` and the log
    at start: each as 'key: reason'."""
    out = []
    if cfg.metrics.listen and not _is_loopback(cfg.metrics.listen.rpartition(":")[0]):
        out.append(f"metrics.listen: {cfg.metrics.listen} is reachable from other machines, "
                   "and metrics have no authentication: anyone who can reach it learns the "
                   "connection counts, drops and interfaces; listen on 127.0.0.1 (or [::1]) "
                   "and let a local scraper or a TLS proxy expose it")
    lan = [i for i in cfg.interfaces if i.lan]
    if lan and cfg.lan.dns and not cfg.lan.upstream and not any(i.dhcp for i in cfg.interfaces):
        out.append("lan.upstream: no DNS servers to forward to, and no WAN lease to learn "
                   "them from: the LAN's resolver answers local names only")
    if lan and cfg.firewall.input == "accept" and not any(
            x.chain == "input" for x in cfg.firewall.rules):
        out.append("firewall.input: every service the router's own stack listens on is open "
                   "to the LAN links; name the ones you offer with input rules and set "
                   "input = \"drop\" (docs/deployment.md)")
    pm = cfg.portmap
    wanted = ([("udp", 17, PCP_PORT, "portmap.pcp/natpmp")] if pm.pcp or pm.natpmp else []) + \
        ([("tcp", 6, pm.upnp_port, "portmap.upnp")] if pm.upnp else [])
    for name, proto, port, key in wanted:
        if not _input_accepts(cfg, proto, port, {i.zone for i in lan}):
            out.append(f"{key}: no input rule accepts {name} port {port} from the LAN links' "
                       "zones, so no LAN host reaches the service: add one "
                       "(docs/portmap.md)")
    return out


def _input_accepts(cfg: Config, proto: int, port: int, zones: set[str]) -> bool:
    """Whether the input chain lets new connections to ``proto``/``port``
    in from every one of ``zones`` (the first matching rule decides)."""
    for zone in zones:
        verdict = cfg.firewall.input
        for x in cfg.firewall.rules:
            if (x.chain == "input" and x.from_zone in (None, zone) and
                    x.protocol in (0, proto) and not x.states and x.source is None and
                    (x.port_min == 0 or x.port_min <= port <= x.port_max)):
                verdict = x.action
                break
        if verdict != "accept":
            return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain TOML-ready data, every default filled in: what
    ``routerctl config show`` prints (written with the ``toml`` package)."""
    def iface(i: Interface) -> dict[str, Any]:
        d: dict[str, Any] = {"name": i.name, "address": "dhcp" if i.dhcp else str(i.address),
                             "zone": i.zone,
                             "mtu": i.mtu, "txqueuelen": i.txqueuelen,
                             "rp_filter": i.rp_filter}
        if i.precreated:
            d["precreated"] = True
        if i.attach is not None:
            d["attach"] = i.attach
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
        if i.lan is not None:
            d["lan"] = _knobs(i.lan) | {"static": [
                {"mac": s.mac, "address": str(s.address)} | ({"name": s.name} if s.name else {})
                for s in i.lan.static]}
            if i.lan.pool is not None:
                d["lan"]["pool"] = f"{i.lan.pool[0]}-{i.lan.pool[1]}"
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
        "control": _knobs(cfg.control),
        "metrics": _knobs(cfg.metrics),
        "log": _knobs(cfg.log),
        "dataplane": _knobs(cfg.dataplane),
        "service": _knobs(cfg.service),
        "lan": _knobs(cfg.lan),
        "portmap": _knobs(cfg.portmap) | {"rule": [
            {"action": "allow" if x.allow else "deny", "ports": _ports(x.ports),
             "hosts": str(x.hosts), "host_ports": _ports(x.host_ports)}
            for x in cfg.portmap.rules]},
        "conntrack": _knobs(cfg.conntrack) | {"timeouts": dict(cfg.conntrack.timeouts)},
        "nat": _knobs(cfg.nat) | {
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
        "firewall": _knobs(cfg.firewall) | {
                     "policy": [{"from": p.from_zone, "to": p.to_zone, "action": p.action}
                                for p in cfg.firewall.policies],
                     "rule": [rule_dict(x) for x in cfg.firewall.rules]},
        "loadbalancer": [{"name": lb.name, "interface": lb.interface,
                          "address": str(lb.address), "protocol": lb.protocol,
                          "port": lb.port, "masquerade": lb.masquerade,
                          "backend": [{"address": str(b.address), "port": b.port,
                                       "weight": b.weight} for b in lb.backends]}
                         for lb in cfg.loadbalancers],
        "interface": [iface(i) for i in cfg.interfaces if not i.host_link],
        "route": [route(r) for r in cfg.routes] + [
            {"destination": str(r.destination), "interface": r.interface}
            | ({"gateway": str(r.gateway)} if r.gateway is not None else {})
            for r in cfg.routes6],
    }


def _ports(r: tuple[int, int]) -> str:
    return f"{r[0]}-{r[1]}"


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
