"""rt_dp_poll() on real descriptors: a batch from one interface, then one
from each interface it wrote to.  Datagram socket pairs stand in for TUN
devices (one read, one packet), so the follow-up read can be checked
without namespaces; the namespace tests run the same path on TUNs."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from router.config import parse
from router.datapath import Datapath
from router.tables import compile_tables
from tests.native.conftest import BASE, LAN, LAN_HOST, ROUTER_WAN, SERVER, WAN
from tests.packets import IP, UDP, Raw, verify_checksums


@pytest.fixture
def wired() -> Iterator[tuple[Datapath, socket.socket, socket.socket]]:
    """A data plane whose lan0 and wan0 are one end of a socket pair each;
    the other ends are the 'hosts'."""
    lan_rt, lan_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    wan_rt, wan_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (lan_rt, wan_rt, lan_host, wan_host):
        s.setblocking(False)
    dp = Datapath(capacity=1024, batch=64, seed=1)
    dp.load(compile_tables(parse(BASE.encode(), "t.toml"),
                           {"lan0": lan_rt.fileno(), "wan0": wan_rt.fileno()}))
    yield dp, lan_host, wan_host
    for s in (lan_rt, wan_rt, lan_host, wan_host):
        s.close()


def test_answer_already_queued_is_read_in_the_same_call(
        wired: tuple[Datapath, socket.socket, socket.socket]) -> None:
    dp, lan_host, wan_host = wired
    lan_host.send(bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=5000, dport=53) / Raw(b"q")))
    # The server's answer is queued on the WAN device before the router
    # looks: as when the write of the query ran the server's stack.
    wan_host.send(bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=5000) /
                        Raw(b"answer")))
    assert dp.poll(LAN, 64, 1_000_000) == 2  # the query, then the answer
    out = IP(wan_host.recv(2048))
    assert out.src == ROUTER_WAN and out.dst == SERVER
    back = lan_host.recv(2048)
    verify_checksums(back)
    assert IP(back).dst == LAN_HOST and bytes(IP(back)[Raw]) == b"answer"
    assert dp.counters()["rx_packets"] == 2


def test_only_interfaces_written_to_are_read_again(
        wired: tuple[Datapath, socket.socket, socket.socket]) -> None:
    dp, lan_host, wan_host = wired
    # A packet the router drops writes nothing: the WAN side is not read.
    lan_host.send(bytes(IP(src=LAN_HOST, dst=SERVER, ttl=1) / UDP(sport=1, dport=2)))
    wan_host.send(bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=9)))
    assert dp.poll(LAN, 64, 1_000_000) == 1  # the expired packet, answered on lan0
    assert dp.poll(WAN, 64, 1_000_000) == 1  # still there for its own turn
    assert dp.poll(WAN, 64, 1_000_000) == 0
    os.set_blocking(lan_host.fileno(), False)
    assert IP(lan_host.recv(2048)).proto == 1  # ICMP time exceeded
