"""The router's own services behind the host link: connections to the
router's addresses from a LAN link are delivered there unchanged, its own
stack's traffic comes back from there, and the WAN never reaches it."""

from __future__ import annotations

import dataclasses

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # type: ignore[import-untyped]

from router.config import parse
from router.datapath import Datapath, DatapathError
from router.tables import compile_tables
from tests.helpers import LAN_OUT, POOL, SERVICES_LAN
from tests.native.conftest import LAN, LAN_HOST, ROUTER_LAN, ROUTER_WAN, SERVER, WAN, Lab
from tests.packets import ICMP, IP, TCP, UDP, Raw, verify_checksums

HOST = 2  # the host link comes after the configured interfaces
STACK = "169.254.53.2"  # the router's own stack, on the host link
LAN6, ROUTER_LAN6, SERVER6 = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:ff::10"

CONFIG = SERVICES_LAN + POOL + """
[[interface]]
name = "wan0"
address = "203.0.113.1/24"
address6 = "2001:db8:ff::1/64"
zone = "wan"

[[route]]
destination = "0.0.0.0/0"
interface = "wan0"
""" + LAN_OUT


def services_lab(extra: str = "") -> Lab:
    cfg = parse((CONFIG + extra).encode(), "test.toml")
    assert [i.name for i in cfg.interfaces][HOST] == "rt-self"
    dp = Datapath(capacity=256, batch=64, seed=3)
    dp.load(compile_tables(cfg, {}))
    return Lab(dp)


def query(src: str = LAN_HOST, dst: str = ROUTER_LAN, sport: int = 5353) -> bytes:
    return bytes(IP(src=src, dst=dst, ttl=1) / UDP(sport=sport, dport=53) / Raw(b"q" * 20))


def test_a_lan_connection_to_the_router_is_delivered_unchanged() -> None:
    lab = services_lab()
    pkt = query()
    r = lab.send(LAN, pkt)
    # Delivered, not forwarded: even TTL 1 arrives, with the same bytes.
    assert (r.out_iface, r.reason) == (HOST, "none") and r.data == pkt
    (e,) = lab.entries()
    assert e.status & 0x4000  # RT_CT_TO_HOST
    assert (e.src[0], e.dst[0]) == (LAN_HOST, ROUTER_LAN)
    # The stack answers from the router's LAN address: forwarded to the LAN.
    answer = bytes(IP(src=ROUTER_LAN, dst=LAN_HOST) / UDP(sport=53, dport=5353) / Raw(b"a"))
    r = lab.send(HOST, answer)
    assert r.out_iface == LAN and IP(r.data).ttl == 63
    verify_checksums(r.data)
    # The client's next query follows its connection to the host link.
    assert lab.send(LAN, query()).out_iface == HOST
    assert len(lab.entries()) == 1


def test_the_wan_never_reaches_the_services() -> None:
    lab = services_lab()
    r = lab.send(WAN, query(src=SERVER, dst=ROUTER_WAN))
    assert (r.out_iface, r.reason) == (-1, "local_unhandled")
    assert lab.entries() == []


def test_echo_is_still_the_data_planes_own() -> None:
    lab = services_lab()
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / ICMP(type=8)))
    assert r.out_iface == LAN and IP(r.data)[ICMP].type == 0


def test_the_input_chain_governs_the_services() -> None:
    lab = services_lab("""
[firewall]
input = "drop"

[[firewall.rule]]
chain = "input"
from = "lan"
protocol = "udp"
port = 53
action = "accept"
""")
    assert lab.send(LAN, query()).out_iface == HOST
    ssh = bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / TCP(sport=40000, dport=22, flags="S"))
    assert lab.send(LAN, ssh).reason == "firewall_drop"


def test_the_stack_goes_out_masqueraded_and_its_replies_come_back() -> None:
    lab = services_lab()
    up = bytes(IP(src=STACK, dst=SERVER) / UDP(sport=40000, dport=53) / Raw(b"q"))
    r = lab.send(HOST, up)
    assert r.out_iface == WAN and IP(r.data).src == ROUTER_WAN
    port = IP(r.data)[UDP].sport
    back = bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=port) / Raw(b"a"))
    r = lab.send(WAN, back)
    assert r.out_iface == HOST and IP(r.data).dst == STACK
    verify_checksums(r.data)


def test_the_stack_may_send_from_a_router_address() -> None:
    lab = services_lab()
    # From the LAN address to a LAN host (dnsmasq's ping before a lease):
    # the reply is for a router address, and goes back to the stack.
    ping = bytes(IP(src=ROUTER_LAN, dst=LAN_HOST) / ICMP(type=8, id=7))
    assert lab.send(HOST, ping).out_iface == LAN
    pong = bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / ICMP(type=0, id=7))
    r = lab.send(LAN, pong)
    assert (r.out_iface, r.reason) == (HOST, "none")
    # From the WAN address to the WAN: replies likewise.
    up = bytes(IP(src=ROUTER_WAN, dst=SERVER) / TCP(sport=41000, dport=80, flags="S", seq=9))
    r = lab.send(HOST, up)
    assert r.out_iface == WAN and IP(r.data)[TCP].sport == 41000
    back = bytes(IP(src=SERVER, dst=ROUTER_WAN) / TCP(sport=80, dport=41000, flags="SA",
                                                     ack=10, seq=100))
    assert lab.send(WAN, back).out_iface == HOST


def test_no_one_else_may_send_from_a_router_address() -> None:
    lab = services_lab()
    spoofed = bytes(IP(src=ROUTER_LAN, dst=SERVER) / UDP(sport=1, dport=2))
    assert lab.send(LAN, spoofed).reason == "martian_address"


def test_ipv6_services() -> None:
    lab = services_lab()
    q = bytes(IPv6(src=LAN6, dst=ROUTER_LAN6, hlim=1) / UDP(sport=5353, dport=53) / Raw(b"q"))
    r = lab.send(LAN, q)
    assert r.out_iface == HOST and r.data == q
    a = bytes(IPv6(src=ROUTER_LAN6, dst=LAN6) / UDP(sport=53, dport=5353) / Raw(b"a"))
    assert lab.send(HOST, a).out_iface == LAN
    assert lab.send(LAN, q).out_iface == HOST
    # The WAN's echo is answered, its other traffic not delivered.
    r = lab.send(WAN, bytes(IPv6(src=SERVER6, dst="2001:db8:ff::1") /
                            UDP(sport=1, dport=53)))
    assert r.reason == "local_unhandled"
    r = lab.send(WAN, bytes(IPv6(src=SERVER6, dst="2001:db8:ff::1") / ICMPv6EchoRequest()))
    assert r.out_iface == WAN


def test_a_restored_connection_without_a_host_link_is_dropped() -> None:
    lab = services_lab()
    lab.send(LAN, query())
    saved = lab.entries()
    plain = parse(CONFIG.replace(POOL, "").encode(), "t.toml")
    dp = Datapath(capacity=256, batch=64, seed=3)
    dp.load(compile_tables(plain, {}))
    other = Lab(dp)
    assert [dp.restore(e, other.now) for e in saved] == [0]
    r = other.send(LAN, query())
    assert (r.out_iface, r.reason) == (-1, "local_unhandled")


def test_one_host_link_at_most() -> None:
    cfg = parse(CONFIG.encode(), "test.toml")
    t = compile_tables(cfg, {})
    two = dataclasses.replace(t, ifaces=tuple(dataclasses.replace(i, host=True)
                                              for i in t.ifaces[1:]) + t.ifaces[:1])
    with pytest.raises(DatapathError, match="second host link"):
        Datapath(capacity=16, batch=8).load(two)
    first = dataclasses.replace(t.ifaces[0], host=True)
    both = dataclasses.replace(t, ifaces=(first, *t.ifaces[1:]))
    with pytest.raises(DatapathError, match="cannot offer services"):
        Datapath(capacity=16, batch=8).load(both)


def test_the_stacks_own_address_is_reached_only_as_the_router() -> None:
    """Routed to the host link's far side: the WAN gets nothing even where
    the zone policy would let it through; the LAN gets the services."""
    lab = services_lab('\n[[firewall.policy]]\nfrom = "wan"\nto = "self"\naction = "accept"\n')
    r = lab.send(WAN, query(src=SERVER, dst=STACK))
    assert (r.out_iface, r.reason) == (-1, "local_unhandled")
    assert lab.send(LAN, query(dst=STACK)).out_iface == HOST
