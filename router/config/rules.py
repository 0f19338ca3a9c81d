"""The rule tables of a config: NAT (source NAT, port forwards, NPTv6,
NAT66), load balancers and the firewall (policies, rules, limits, logging).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from router.config.model import (
    ACTIONS,
    PROTOCOLS,
    STATES,
    ZONE_RE,
    Backend,
    Firewall,
    Interface,
    LoadBalancer,
    Masquerade6,
    Nat,
    Npt6,
    Policy,
    PortForward,
    Rule,
    SourceNat,
)
from router.config.reader import Reader, any_net, net6
from router.native.names import DROP_NAMES


def nat(r: Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface]) -> Nat:
    t, v = r.section(doc, "nat", Nat, frozenset({"masquerade", "snat", "forward", "npt6",
                                                 "masquerade6"}))
    if v["port_min"] > v["port_max"]:
        raise r.fail("nat.port_min", f"must not exceed port_max ({v['port_max']})")
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
        inside = net6(r, r.get(x, "inside", w, str, required=True), f"{w}.inside")
        outside = net6(r, r.get(x, "outside", w, str, required=True), f"{w}.outside")
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
        srcs6 = tuple(net6(r, v, f"{w}.sources[{k}]")
                      for k, v in enumerate(r.get(x, "sources", w, list, [])))
        masq6.append(Masquerade6(interface=name, sources=srcs6))
    return Nat(rules=tuple(rules), forwards=forwards, npt6=tuple(npt6),
               masquerade6=tuple(masq6), **v)


def port_range(r: Reader, val: Any, key: str) -> tuple[int, int]:
    if isinstance(val, int) and not isinstance(val, bool):
        lo = hi = val
    elif isinstance(val, str) and re.fullmatch(r"\d+-\d+", val):
        lo, hi = (int(x) for x in val.split("-"))
    else:
        raise r.fail(key, "must be a port (8080) or a range ('8000-8010')")
    if not 1 <= lo <= hi <= 65535:
        raise r.fail(key, f"ports must be 1-65535 and ascending, got {val!r}")
    return lo, hi


def _forwards(r: Reader, t: Mapping[str, Any], ifaces: Mapping[str, Interface]
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
        lo, hi = port_range(r, f["port"], f"{w}.port")
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


def loadbalancers(r: Reader, doc: Mapping[str, Any], ifaces: Mapping[str, Interface],
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
            weight = r.knob(b, Backend, "weight", bw)
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


def firewall(r: Reader, doc: Mapping[str, Any], zones: set[str]
             ) -> Firewall:
    t, v = r.section(doc, "firewall", Firewall, frozenset({"policy", "rule"}))
    for x in v["log_reasons"]:
        if x not in DROP_NAMES or x == "none":
            raise r.fail("firewall.log_reasons",
                         f"unknown drop reason {x!r} (known: {', '.join(DROP_NAMES[1:])})")
    v["log_reasons"] = tuple(dict.fromkeys(v["log_reasons"]))
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
        source = any_net(r, p["source"], f"{w}.source") if "source" in p else None
        dest = (any_net(r, p["destination"], f"{w}.destination") if "destination" in p
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
            lo, hi = port_range(r, p["port"], f"{w}.port")
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
    return Firewall(policies=tuple(out), rules=tuple(rules), **v)


