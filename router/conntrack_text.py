"""Connections in the formats of conntrack-tools.

``entry_json()`` turns a data plane entry into the JSON form that the control
socket serves and ``routerctl --json`` prints; ``entry_line()`` turns that JSON
form into the exact text of ``conntrack -L`` (with accounting on, so
``packets=``/``bytes=`` follow each tuple as conntrack-tools prints them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.native.names import ASSURED, DST_NAT, NAT_MAPPED, SEEN_REPLY, SRC_NAT
from router.native.records import CtEntry

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 47: "gre", 132: "sctp",
               136: "udplite", 33: "dccp"}


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, "unknown")


@dataclass(frozen=True)
class Output:
    """conntrack's ``-o``: ``extended`` puts the layer 3 name and number
    first, ``id`` the entry's id last, ``timestamp`` (events) the time the
    event was seen before the line."""
    extended: bool = False
    id: bool = False
    timestamp: bool = False


PLAIN = Output()
L3_NUMBERS = {"ipv4": 2, "ipv6": 10}   # AF_INET, AF_INET6, as conntrack prints them
# conntrack -S's fields, in the order conntrack 1.4.7 prints them on Linux 6.
STATS_FIELDS = ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
                "search_restart", "clash_resolve", "chaintoolong")


def _l3(j: Mapping[str, Any]) -> str:
    return f"{j['family']:<8} {L3_NUMBERS[j['family']]} "


def stats_line(counters: Mapping[str, int], cpu: int = 0) -> str:
    """One ``conntrack -S`` line: the cpu padded to eight columns, a tab,
    then each field and a space."""
    return f"{'cpu=' + str(cpu):<8}\t" + "".join(f"{k}={counters.get(k, 0)} "
                                                  for k in STATS_FIELDS)


def entry_json(e: CtEntry) -> dict[str, Any]:
    def tup(d: int) -> dict[str, Any]:
        t: dict[str, Any] = {"src": e.src[d], "dst": e.dst[d]}
        if e.proto in (6, 17):
            t |= {"sport": e.sport[d], "dport": e.dport[d]}
        elif e.proto in (1, 58):  # ICMP and ICMPv6 queries: type, code, identifier
            t |= {"type": e.dport[d] >> 8, "code": e.dport[d] & 0xFF, "id": e.sport[d]}
        t |= {"packets": e.packets[d], "bytes": e.bytes[d]}
        return t

    return {
        "id": e.slot,
        "family": "ipv4" if e.family == 4 else "ipv6",
        "proto": proto_name(e.proto),
        "protonum": e.proto,
        "timeout": (e.timeout_ms + 999) // 1000,
        "state": e.state,
        "original": tup(0),
        "reply": tup(1),
        "unreplied": not e.status & SEEN_REPLY,
        "assured": bool(e.status & ASSURED),
        "status": e.status,
        "age": e.age_ms // 1000,
        "mark": 0,
        "use": 1,
    }


def _tuple_text(t: Mapping[str, Any], proto: int) -> str:
    parts = [f"src={t['src']}", f"dst={t['dst']}"]
    if proto in (6, 17):
        parts += [f"sport={t['sport']}", f"dport={t['dport']}"]
    elif proto in (1, 58):
        parts += [f"type={t['type']}", f"code={t['code']}", f"id={t['id']}"]
    parts.append(f"packets={t['packets']} bytes={t['bytes']}")
    return " ".join(parts)


def event_line(j: Mapping[str, Any], opts: Output = PLAIN) -> str:
    """One ``conntrack -E`` line: the event type right-aligned in nine
    columns; DESTROY carries the counters and the state, not the timeout
    (as Linux reports a connection that expired)."""
    head = f"{'[' + j['type'] + ']':>9} " + (_l3(j) if opts.extended else "") + \
        f"{j['proto']:<8} {j['protonum']}"
    destroy = j["type"] == "DESTROY"
    if not destroy:
        head += f" {j['timeout']}"
    if j.get("state"):
        head += f" {j['state']}"
    if opts.timestamp:
        sec, usec = divmod(round(float(j["time"]) * 1_000_000), 1_000_000)
        head = f"[{sec:08d}.{usec:06d}]\t{head}"

    def tup(t: Mapping[str, Any]) -> str:
        text = _tuple_text(t, j["protonum"])
        return text if destroy else text.rsplit(" packets=", 1)[0]

    out = [head, tup(j["original"])]
    if j["unreplied"]:
        out.append("[UNREPLIED]")
    out.append(tup(j["reply"]))
    if j["assured"]:
        out.append("[ASSURED]")
    if opts.id:
        out.append(f"id={j['id']}")
    return " ".join(out)


def entry_line(j: Mapping[str, Any], opts: Output = PLAIN) -> str:
    """One ``conntrack -L`` line from the JSON form."""
    head = (_l3(j) if opts.extended else "") + f"{j['proto']:<8} {j['protonum']} {j['timeout']}"
    if j.get("state"):
        head += f" {j['state']}"
    out = [head, _tuple_text(j["original"], j["protonum"])]
    if j["unreplied"]:
        out.append("[UNREPLIED]")
    out.append(_tuple_text(j["reply"], j["protonum"]))
    if j["assured"]:
        out.append("[ASSURED]")
    out.append(f"mark={j['mark']} use={j['use']}")
    if opts.id:
        out.append(f"id={j['id']}")
    return " ".join(out)


def nat_mappings(entries: list[CtEntry], filtering: str = "address-and-port-dependent"
                 ) -> list[dict[str, Any]]:
    """The NAT mappings behind the connections: one per (protocol, internal
    endpoint, external endpoint), with how many connections use it.
    Connections let in through an endpoint-independent mapping count with
    the mapping; port forwards are listed as such."""
    def endpoint(addr: str, port: int) -> str:
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in entries:
        if e.status & DST_NAT:
            kind = "snat" if e.status & NAT_MAPPED else "forward"
            internal = (e.src[1], e.sport[1])
            external = (e.dst[0], e.dport[0])
        elif e.status & SRC_NAT:
            kind = "snat"
            internal = (e.src[0], e.sport[0])
            external = (e.dst[1], e.sport[1] if e.proto in (1, 58) else e.dport[1])
        else:
            continue
        key = (e.proto, kind, internal, external)
        m = out.get(key)
        if m is None:
            m = out[key] = {
                "proto": proto_name(e.proto), "kind": kind,
                "internal": endpoint(*internal),
                "external": endpoint(*external),
                # NAT66 maps per connection: only the connection's peer gets in.
                "filtering": ("forward" if kind != "snat" else filtering if e.family == 4
                              else "address-and-port-dependent"),
                "connections": 0, "age": 0, "timeout": 0,
            }
        m["connections"] += 1
        m["age"] = max(m["age"], e.age_ms // 1000)
        m["timeout"] = max(m["timeout"], (e.timeout_ms + 999) // 1000)
    return sorted(out.values(), key=lambda m: (m["proto"], m["internal"], m["external"]))


def mapping_line(m: dict[str, Any]) -> str:
    return (f"{m['proto']:<5} {m['kind']:<8} {m['internal']:<22} {m['external']:<22} "
            f"{m['connections']:>5} {m['age']:>8} {m['timeout']:>8}  {m['filtering']}")


MAPPING_HEADER = (f"{'proto':<5} {'kind':<8} {'internal':<22} {'external':<22} "
                  f"{'conns':>5} {'age(s)':>8} {'left(s)':>8}  filtering")
