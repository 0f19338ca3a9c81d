"""conntrack-tools' filters, on connections in their JSON form.

``routerctl conntrack list|get|delete|update|events`` take the options of
``conntrack -L|-G|-D|-U|-E`` and the control socket applies them here, with
conntrack 1.4.7's meanings: ``-u ASSURED`` wants the bit set (``UNREPLIED``:
no reply seen), ``--src-nat`` without an address wants a source translation
of the address or the port, as libnetfilter_conntrack tells one (so an ICMP
echo, whose reply tuple carries its identifier where the original has its
type and code, counts as translated both ways, as conntrack shows it),
``-m MARK[/MASK]`` compares the masked mark, ``-w`` is the numeric conntrack
zone (the router has one table: zone 0).  ``fw_zone`` is the router's own
filter, the firewall zone the original source is in.

``parse()`` checks a request's filter and raises ``ValueError`` with the
option and its reason; ``Filter.match()`` is the predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from router.native.names import ASSURED, SEEN_REPLY, TCP_STATE_NAMES

# The status names conntrack -u accepts.  The router never expects, fixes a
# timeout or offloads, so those match nothing (as on a kernel that did not).
STATUS_NAMES = ("EXPECTED", "SEEN_REPLY", "ASSURED", "FIXED_TIMEOUT", "OFFLOAD", "UNREPLIED")
FAMILIES = ("ipv4", "ipv6")
# The request keys of a filter (routerctl sends these); "fw_zone" is resolved by
# the caller.
KEYS = ("proto", "src", "dst", "reply_src", "reply_dst", "sport", "dport", "state", "family",
        "status", "src_nat", "dst_nat", "any_nat", "mark", "zone", "fw_zone")


@dataclass
class Filter:
    tests: list[Callable[[Mapping[str, Any]], bool]] = field(default_factory=list)
    family: str | None = None   # None: any

    def match(self, j: Mapping[str, Any]) -> bool:
        if self.family is not None and j["family"] != self.family:
            return False
        return all(t(j) for t in self.tests)

    @property
    def empty(self) -> bool:
        return not self.tests


def _address(opt: str, v: Any) -> str:
    try:
        return str(ip_address(str(v)))
    except ValueError:
        raise ValueError(f"{opt}: {v!r} is not an IP address") from None


def _whole(v: Any) -> int | None:
    """A whole number from a request (JSON: an integer, or its digits as a
    string), or None: a float, a bool, infinity are not."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().isdigit() and len(v) < 12:
        return int(v)
    return None


def _port(opt: str, v: Any) -> int:
    n = _whole(v)
    if n is None or not 0 <= n <= 65535:
        raise ValueError(f"{opt}: {v!r} is not a port (0-65535)")
    return n


def _l4(t: Mapping[str, Any], end: str) -> bytes:
    """The two bytes libnetfilter_conntrack keeps for a tuple's source or
    destination 'port': the port, or for ICMP the identifier (source) and
    the type and code (destination)."""
    if "type" in t:
        return t["id"].to_bytes(2, "big") if end == "src" else bytes((t["type"], t["code"]))
    if "sport" in t:
        return int(t["sport" if end == "src" else "dport"]).to_bytes(2, "big")
    return b"\0\0"


def is_snat(j: Mapping[str, Any]) -> tuple[bool, bool]:
    """(address, port) translated at the source, as libnetfilter_conntrack's
    NFCT_GOPT_IS_SNAT and IS_SPAT say."""
    o, r = j["original"], j["reply"]
    return ip_address(r["dst"]) != ip_address(o["src"]), _l4(r, "dst") != _l4(o, "src")


def is_dnat(j: Mapping[str, Any]) -> tuple[bool, bool]:
    o, r = j["original"], j["reply"]
    return ip_address(r["src"]) != ip_address(o["dst"]), _l4(r, "src") != _l4(o, "dst")


def _nat_spec(opt: str, v: str) -> tuple[str | None, int | None]:
    """``--src-nat [IP[:PORT]]``: '' (any), an address, address:port."""
    if not v:
        return None, None
    if v.startswith("["):
        addr, _, rest = v[1:].partition("]")
        return _address(opt, addr), _port(opt, rest[1:]) if rest.startswith(":") else None
    if v.count(":") == 1:
        addr, port = v.split(":")
        return _address(opt, addr), _port(opt, port)
    return _address(opt, v), None


def _nat_test(opt: str, v: str, kind: str) -> Callable[[Mapping[str, Any]], bool]:
    addr, port = _nat_spec(opt, v)
    sides = ("dst", "dport") if kind == "src" else ("src", "sport")

    def has(j: Mapping[str, Any]) -> bool:
        by_addr, by_port = is_snat(j) if kind == "src" else is_dnat(j)
        r = j["reply"]
        if addr is None and port is None:
            return by_addr or by_port
        ok = addr is None or (by_addr and ip_address(r[sides[0]]) == ip_address(addr))
        if port is not None:
            ok = ok and by_port and r.get(sides[1]) == port
        return ok
    return has


def _mark_test(v: Any) -> Callable[[Mapping[str, Any]], bool]:
    text = str(v)
    value, _, mask = text.partition("/")
    try:
        val, msk = int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF
    except ValueError:
        raise ValueError(f"--mark: {text!r} is not MARK or MARK/MASK") from None
    if not (0 <= val <= 0xFFFFFFFF and 0 <= msk <= 0xFFFFFFFF):
        raise ValueError(f"--mark: {text!r} is out of range (32 bits)")
    return lambda j: (int(j["mark"]) & msk) == val


def _status_test(v: Any) -> Callable[[Mapping[str, Any]], bool]:
    names = [n.strip().upper() for n in str(v).split(",") if n.strip()]
    bad = [n for n in names if n not in STATUS_NAMES]
    if bad or not names:
        raise ValueError(f"--status: {', '.join(bad) or repr(v)} is not a status "
                         f"(one or more of {', '.join(STATUS_NAMES)})")

    def has(j: Mapping[str, Any]) -> bool:
        s = int(j["status"])
        for n in names:
            if n == "UNREPLIED" and s & SEEN_REPLY:
                return False
            if (n == "SEEN_REPLY" and not s & SEEN_REPLY) or \
                    (n == "ASSURED" and not s & ASSURED) or \
                    n in ("EXPECTED", "FIXED_TIMEOUT", "OFFLOAD"):
                return False
        return True
    return has


Test = Callable[[Mapping[str, Any]], bool]


def _addr_test(d: str, end: str, a: str) -> Test:
    want = ip_address(a)
    return lambda j: ip_address(j[d][end]) == want


def _port_test(k: str, port: int) -> Test:
    return lambda j: bool(j["original"].get(k) == port)


def _either(a: Test, b: Test) -> Test:
    return lambda j: a(j) or b(j)


def parse(args: Mapping[str, Any]) -> Filter:
    """The filter of a request.  Without ``family`` both are listed (as
    conntrack 1.4.7 does on Linux 6) unless an address given names one."""
    f = Filter()
    fam = args.get("family")
    six = None
    for k, opt in (("src", "--src"), ("dst", "--dst"), ("reply_src", "--reply-src"),
                   ("reply_dst", "--reply-dst")):
        v = args.get(k)
        if v is None:
            continue
        a = _address(opt, v)
        six = ":" in a
        d, end = ("original", k) if k in ("src", "dst") else ("reply", k[6:])
        f.tests.append(_addr_test(d, end, a))
    if fam is not None:
        if str(fam).lower() not in FAMILIES:
            raise ValueError(f"--family: {fam!r} is not ipv4 or ipv6")
        f.family = str(fam).lower()
    elif six is not None:
        f.family = "ipv6" if six else "ipv4"
    proto = args.get("proto")
    if proto is not None:
        f.tests.append(lambda j: str(proto).lower() in (j["proto"], str(j["protonum"])))
    for k in ("sport", "dport"):
        if args.get(k) is not None:
            f.tests.append(_port_test(k, _port(f"--{k}", args[k])))
    state = args.get("state")
    if state is not None:
        if str(state).upper() not in TCP_STATE_NAMES:
            raise ValueError(f"--state: {state!r} is not a TCP state "
                             f"({', '.join(s for s in TCP_STATE_NAMES if s != 'NONE')})")
        f.tests.append(lambda j: (j["state"] or "").upper() == str(state).upper())
    if args.get("status") is not None:
        f.tests.append(_status_test(args["status"]))
    if args.get("mark") is not None:
        f.tests.append(_mark_test(args["mark"]))
    zone = args.get("zone")
    if zone is not None:
        z = _whole(zone)
        if z is None:
            raise ValueError(f"--zone: {zone!r} is a conntrack zone number in conntrack-tools "
                             f"(the router has one table, zone 0); a firewall zone is "
                             f"--fw-zone NAME")
        f.tests.append(lambda j: z == 0)
    nat = [(k, args[k]) for k in ("src_nat", "dst_nat", "any_nat") if args.get(k) is not None]
    for k, v in nat:
        opt = "--" + k.replace("_", "-")
        if k == "any_nat":
            f.tests.append(_either(_nat_test(opt, str(v), "src"), _nat_test(opt, str(v), "dst")))
        else:
            f.tests.append(_nat_test(opt, str(v), k[:3]))
    return f
