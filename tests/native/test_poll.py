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


def test_capture_filter_runs_before_the_copy(
        wired: tuple[Datapath, socket.socket, socket.socket]) -> None:
    """libpcap's program, run in the I/O path: of three flows only port
    5002's packets (both directions, recorded as such) reach the ring; the
    rest are counted as not matching, never copied."""
    dp, lan_host, wan_host = wired
    dp.capture_start([LAN, WAN], snaplen=128, slots=64, filt="udp port 5002")
    for port in (5001, 5002, 5003):
        lan_host.send(bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=port, dport=53) /
                            Raw(b"q")))
        dp.poll(LAN, 64, 1_000_000)
        wan_host.recv(2048)
    got = dp.capture_read()
    assert [(c.iface, c.outgoing) for c in got] == [(LAN, False), (WAN, True)]
    assert IP(got[0].data).src == LAN_HOST and IP(got[1].data).src == ROUTER_WAN
    assert dp.capture_filtered() == 4   # two flows, in and out
    dp.capture_stop()


def test_capture_filter_libpcap_refuses_is_a_clear_error() -> None:
    from router.datapath import CaptureFilterError
    with pytest.raises(CaptureFilterError, match=r"syntax error|unknown|port"):
        Datapath.capture_check("udp port banana", 2048)
    with pytest.raises(CaptureFilterError):
        Datapath.capture_check("ether host 01:02:03:04:05:06", 2048)  # no link layer on a TUN
    Datapath.capture_check("ip6 and tcp port 443 or icmp[icmptype] == icmp-echo", 2048)


def test_capture_ip6_filter_sees_only_ipv6(
        wired: tuple[Datapath, socket.socket, socket.socket]) -> None:
    dp, lan_host, _wan_host = wired
    dp.capture_start([LAN], snaplen=128, slots=64, filt="ip6")
    lan_host.send(bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=53)))
    dp.poll(LAN, 64, 1_000_000)
    assert dp.capture_read() == [] and dp.capture_filtered() == 1
    dp.capture_stop()
