"""Routing, TTL, MTU, local delivery and router-originated ICMP."""

import struct

from tests.native.conftest import (
    LAN,
    LAN_HOST,
    ROUTER_LAN,
    ROUTER_WAN,
    SERVER,
    WAN,
    Lab,
    LabFactory,
)
from tests.packets import ICMP, IP, TCP, UDP, Raw, verify_checksums


def test_ttl_expired_sends_time_exceeded(lab: Lab) -> None:
    pkt = bytes(IP(src=LAN_HOST, dst=SERVER, ttl=1) / UDP(sport=1111, dport=33434) / Raw(b"x"))
    r = lab.send(LAN, pkt)
    assert r.reason == "ttl_expired" and r.out_iface == LAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.src == ROUTER_LAN and p.dst == LAN_HOST
    assert p[ICMP].type == 11 and p[ICMP].code == 0
    assert bytes(p[ICMP].payload)[:len(pkt)] == pkt  # quotes the packet as it arrived
    assert lab.entries() == []  # a dropped packet leaves no connection behind
    assert lab.dp.counters()["icmp_sent"] == 1


def test_router_answers_ping(lab: Lab) -> None:
    req = bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / ICMP(type=8, id=5, seq=9) / Raw(b"hello"))
    r = lab.send(LAN, req)
    assert r.out_iface == LAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert (p.src, p.dst, p[ICMP].type, p[ICMP].id, p[ICMP].seq) == (ROUTER_LAN, LAN_HOST, 0, 5, 9)
    assert bytes(p[ICMP].payload) == b"hello"
    # Its WAN address answers too, from the LAN side.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=ROUTER_WAN) / ICMP(type=8, id=6)))
    assert IP(r.data).src == ROUTER_WAN


def test_no_route_sends_net_unreachable(lab_factory: LabFactory) -> None:
    lab = lab_factory()
    # Replace the config with one that has no default route.
    from router.config import parse
    from router.tables import compile_tables
    from tests.native.conftest import BASE
    cfg = parse(BASE.replace('destination = "0.0.0.0/0"', 'destination = "10.0.0.0/8"').encode())
    lab.dp.load(compile_tables(cfg, {}))
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1, dport=2, flags="S")))
    assert r.reason == "no_route" and r.out_iface == LAN
    p = IP(r.data)
    assert p[ICMP].type == 3 and p[ICMP].code == 0
    verify_checksums(r.data)
    assert lab.dp.drops()["no_route"] == 1


def test_df_too_big_sends_fragmentation_needed(lab_factory: LabFactory) -> None:
    lab = lab_factory()
    from router.config import parse
    from router.tables import compile_tables
    from tests.native.conftest import BASE
    cfg = parse(BASE.replace("mtu = 1500", "mtu = 1400").encode())
    lab.dp.load(compile_tables(cfg, {}))
    big = bytes(IP(src=LAN_HOST, dst=SERVER, flags="DF") / UDP(sport=1, dport=2) /
                Raw(b"x" * 1450))
    r = lab.send(LAN, big)
    assert r.reason == "too_big" and r.out_iface == LAN
    p = IP(r.data)
    assert p[ICMP].type == 3 and p[ICMP].code == 4
    assert struct.unpack("!H", bytes(p[ICMP])[6:8])[0] == 1400  # next-hop MTU
    assert len(r.data) <= 576
    verify_checksums(r.data)
    # Without DF: dropped (fragmentation is not done), no ICMP.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2) /
                            Raw(b"x" * 1450)))
    assert r.reason == "too_big" and r.out_iface == -1


def test_martians_and_multicast_dropped(lab: Lab) -> None:
    cases = [
        (IP(src="127.0.0.1", dst=SERVER), "martian_address"),
        (IP(src="0.0.0.0", dst=SERVER), "martian_address"),
        (IP(src="224.0.0.5", dst=SERVER), "martian_address"),
        (IP(src=ROUTER_LAN, dst=SERVER), "martian_address"),
        (IP(src=LAN_HOST, dst="127.0.0.1"), "martian_address"),
        (IP(src=LAN_HOST, dst="224.0.0.251"), "not_unicast"),
        (IP(src=LAN_HOST, dst="255.255.255.255"), "not_unicast"),
    ]
    for hdr, reason in cases:
        r = lab.send(LAN, bytes(hdr / UDP(sport=5353, dport=5353)))
        assert (r.out_iface, r.reason) == (-1, reason), hdr.summary()


def test_icmp_error_from_wan_is_related_and_translated(lab: Lab) -> None:
    out = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=5000, dport=9999) /
                              Raw(b"data")))
    sent = out.data
    before = lab.entries()[0]
    # The server answers port unreachable, quoting the translated datagram.
    err = bytes(IP(src=SERVER, dst=ROUTER_WAN) / ICMP(type=3, code=3) / Raw(sent))
    r = lab.send(WAN, err)
    assert r.out_iface == LAN and r.reason == "none"
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.dst == LAN_HOST and p.src == SERVER
    inner = IP(bytes(p[ICMP].payload))
    assert inner.src == LAN_HOST and inner.dst == SERVER and inner[UDP].sport == 5000
    verify_checksums(bytes(inner))  # inner IP and UDP checksums were fixed too
    assert lab.dp.counters()["related"] == 1
    after = lab.entries()[0]
    assert after.packets == before.packets  # an error does not refresh the flow
    assert after.timeout_ms == before.timeout_ms


def test_icmp_error_about_echo_is_related(lab: Lab) -> None:
    out = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER, ttl=5) / ICMP(type=8, id=42, seq=1)))
    err = bytes(IP(src="198.51.100.1", dst=ROUTER_WAN) / ICMP(type=11, code=0) / Raw(out.data))
    r = lab.send(WAN, err)
    assert r.out_iface == LAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.src == "198.51.100.1" and p.dst == LAN_HOST  # intermediate router kept
    inner = IP(bytes(p[ICMP].payload))
    assert inner.src == LAN_HOST and inner[ICMP].id == 42


def test_icmp_error_without_flow_is_dropped(lab: Lab) -> None:
    quoted = bytes(IP(src=ROUTER_WAN, dst=SERVER) / UDP(sport=1, dport=2))
    r = lab.send(WAN, bytes(IP(src=SERVER, dst="192.168.1.50") / ICMP(type=3, code=3) /
                            Raw(quoted)))
    assert r.out_iface == -1 and r.reason == "icmp_error_no_flow"
    assert lab.dp.counters()["error"] == 1


def test_forwarding_decrements_ttl(lab: Lab) -> None:
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER, ttl=64) / UDP(sport=1, dport=2)))
    assert IP(r.data).ttl == 63
    verify_checksums(r.data)


def test_interface_counters(lab: Lab) -> None:
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2)))
    lab.send(LAN, b"\x45\x00")
    st = lab.dp.iface_stats(LAN)
    assert st["rx_packets"] == 2 and st["rx_dropped"] == 1


def test_packet_from_unknown_interface(lab: Lab) -> None:
    r = lab.send(7, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2)))
    assert r.reason == "bad_interface"
