"""Fixtures for the C core: a data plane loaded with a small two-zone lab,
and a plain integer clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from router.config import parse
from router.datapath import Datapath, Result
from router.tables import compile_tables
from tests.helpers import LAN_OUT, TWO_LINKS

LAN, WAN = 0, 1
LAN_HOST = "192.168.1.2"
LAN_HOST2 = "192.168.1.3"
ROUTER_LAN = "192.168.1.1"
ROUTER_WAN = "203.0.113.1"
SERVER = "198.51.100.10"

BASE = TWO_LINKS + """mtu = 1500

[[route]]
destination = "0.0.0.0/0"
gateway = "203.0.113.254"

""" + LAN_OUT


@dataclass
class Lab:
    """A data plane and a clock in milliseconds."""

    dp: Datapath
    now: int = 1_000_000
    sent: list[Result] = field(default_factory=list)

    def send(self, iface: int, pkt: bytes, exact: bool = False) -> Result:
        (r,) = self.dp.process([(iface, pkt)], self.now, exact=exact)
        self.sent.append(r)
        return r

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    def entries(self) -> list:  # type: ignore[type-arg]
        return self.dp.conntrack(self.now)


# For tests of the table's own limits, filled from one host: no source share
# (firewall.source_share), so that one source may take the whole table.
NO_SHARE = "\n[firewall]\nsource_share = 0\n"


# What the lab_factory fixture gives: make_lab with its arguments.
LabFactory = Callable[..., "Lab"]


def make_lab(extra: str = "", capacity: int = 1024, seed: int = 7) -> Lab:
    cfg = parse((BASE + extra).encode(), "test.toml")
    dp = Datapath(capacity=capacity, batch=64, seed=seed)
    dp.load(compile_tables(cfg, {}))
    return Lab(dp)


@pytest.fixture
def lab() -> Lab:
    return make_lab()


@pytest.fixture
def lab_factory() -> Callable[..., Lab]:
    return make_lab


def later_fragments_first(lab: Lab, iface: int, out: int, first: bytes,
                          later: list[bytes]) -> list[bytes]:
    """Sends a datagram's later fragments before its first: each is held (not
    dropped, nothing leaves), and once the first has gone through to ``out``
    the held ones follow it there.  The fragments as they left, first first."""
    for part in reversed(later):
        r = lab.send(iface, part)
        assert r.out_iface == -1 and r.reason == "none"  # held, not dropped
    assert lab.dp.take_ready() == []
    r = lab.send(iface, first)
    assert r.out_iface == out
    ready = lab.dp.take_ready()
    assert [i for i, _ in ready] == [out] * len(later)
    assert lab.dp.counters()["fragments_held"] == len(later)
    return [r.data] + [b for _, b in ready]
