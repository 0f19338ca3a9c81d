"""IPv6 through the C core: forwarding, hop limit, ICMPv6, the extension
header walker, connection tracking and the stateful firewall."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, IPv6Network

import pytest
from scapy.layers.inet import TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Raw  # type: ignore[import-untyped]

from router.config import parse
from router.tables import compile_tables
from tests.native.conftest import BASE, Lab, make_lab
from tests.packets import checksum

HOST6 = "2001:db8:1::2"
ROUTER_LAN6 = "2001:db8:1::1"
ROUTER_WAN6 = "2001:db8:2::1"
SERVER6 = "2001:db8:9::10"

V6 = """
[[interface]]
name = "lan6"
address = "10.66.0.1/24"
address6 = "2001:db8:1::1/64"
zone = "lan"

[[interface]]
name = "wan6"
address = "10.67.0.1/24"
address6 = "2001:db8:2::1/64"
zone = "wan"
mtu = 1280

[[route]]
destination = "::/0"
interface = "wan6"
"""
LAN6, WAN6 = 2, 3  # interface numbers after the base lab's lan0 and wan0


def lab6(extra: str = "") -> Lab:
    return make_lab(V6 + extra)


def verify6(pkt: bytes) -> None:
    """The IPv6 payload length and the L4 checksum, recomputed here."""
    plen = struct.unpack("!H", pkt[4:6])[0]
    assert plen + 40 == len(pkt)
    nh, off = pkt[6], 40
    while nh in (0, 43, 60):
        nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
    l4 = pkt[off:]
    pseudo = pkt[8:40] + struct.pack("!IxxxB", len(l4), nh)
    assert checksum(pseudo + l4) == 0, "bad L4 checksum"


def out6(payload: object, hlim: int = 64, src: str = HOST6, dst: str = SERVER6) -> bytes:
    return bytes(IPv6(src=src, dst=dst, hlim=hlim) / payload)


def test_echo_forwarded_and_answered_with_hop_limit() -> None:
    lab = lab6()
    r = lab.send(LAN6, out6(ICMPv6EchoRequest(id=7, seq=1)))
    assert r.out_iface == WAN6 and r.reason == "none"
    assert r.data[7] == 63  # hop limit decremented; no header checksum in IPv6
    verify6(r.data)
    r = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=HOST6) / ICMPv6EchoReply(id=7, seq=1)))
    assert r.out_iface == LAN6
    (e,) = lab.entries()
    assert e.family == 6 and e.src == (HOST6, SERVER6) and e.dst == (SERVER6, HOST6)
    assert e.proto == 58 and e.seen_reply


def test_tcp_handshake_tracked_and_unsolicited_inbound_refused() -> None:
    lab = lab6()
    syn = out6(TCP(sport=40000, dport=443, flags="S", seq=100))
    assert lab.send(LAN6, syn).out_iface == WAN6
    back = IPv6(src=SERVER6, dst=HOST6)
    assert lab.send(WAN6, bytes(back / TCP(sport=443, dport=40000, flags="SA", seq=900,
                                           ack=101))).out_iface == LAN6
    r = lab.send(LAN6, out6(TCP(sport=40000, dport=443, flags="A", seq=101, ack=901)))
    verify6(r.data)
    (e,) = lab.entries()
    assert e.state == "ESTABLISHED" and e.assured
    # Nothing gets in unless it answers something: policy wan -> lan drops.
    r = lab.send(WAN6, bytes(back / TCP(sport=443, dport=22, flags="S")))
    assert r.out_iface == -1 and r.reason == "policy"
    # An out-of-window segment is refused as for IPv4.
    r = lab.send(WAN6, bytes(back / TCP(sport=443, dport=40000, flags="PA", seq=900 + 10**6,
                                        ack=101) / Raw(b"x")))
    assert r.reason == "tcp_out_of_window"


def test_hop_limit_expiry_gets_time_exceeded() -> None:
    lab = lab6()
    r = lab.send(LAN6, out6(UDP(sport=5, dport=33434) / Raw(b"probe"), hlim=1))
    assert r.out_iface == LAN6
    ip = IPv6(r.data)
    assert ip.src == ROUTER_LAN6 and ip.dst == HOST6 and ip.nh == 58
    assert r.data[40] == 3 and r.data[41] == 0  # time exceeded in transit
    verify6(r.data)
    assert lab.dp.drops()["ttl_expired"] == 1


def test_no_route_gets_unreachable() -> None:
    lab = make_lab(V6.replace('destination = "::/0"', 'destination = "2001:db8:9::/48"'))
    r = lab.send(LAN6, out6(UDP(sport=5, dport=53), dst="2001:db8:77::1"))
    assert r.out_iface == LAN6 and r.data[40] == 1 and r.data[41] == 0
    verify6(r.data)
    assert lab.dp.drops()["no_route"] == 1


def test_too_big_gets_packet_too_big_with_the_mtu() -> None:
    lab = lab6()
    r = lab.send(LAN6, out6(UDP(sport=5, dport=53) / Raw(b"x" * 1300)))
    assert r.out_iface == LAN6
    assert r.data[40] == 2 and struct.unpack("!I", r.data[44:48])[0] == 1280
    assert len(r.data) <= 1280  # an error never exceeds the minimum MTU
    verify6(r.data)


def test_router_answers_echo_to_its_own_address() -> None:
    lab = lab6()
    r = lab.send(LAN6, out6(ICMPv6EchoRequest(id=3, seq=9) / Raw(b"hi"), dst=ROUTER_LAN6))
    assert r.out_iface == LAN6
    reply = IPv6(r.data)
    assert reply.src == ROUTER_LAN6 and reply.dst == HOST6 and r.data[40] == 129
    verify6(r.data)


def test_extension_headers_walked() -> None:
    lab = lab6()
    pkt = IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / \
        IPv6ExtHdrRouting() / UDP(sport=7, dport=53) / Raw(b"q")
    r = lab.send(LAN6, bytes(pkt))
    assert r.out_iface == WAN6
    (e,) = lab.entries()
    assert (e.proto, e.sport[0], e.dport[0]) == (17, 7, 53)


@pytest.mark.parametrize(("name", "build", "reason"), [
    ("hop-by-hop not first",
     lambda: IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() /
     UDP(), "bad_ipv6_ext_header"),
    ("nine extension headers",
     lambda: IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / UDP(),
     "bad_ipv6_ext_header"),
    ("two fragment headers", lambda: IPv6(src=HOST6, dst=SERVER6) /
     IPv6ExtHdrFragment(m=1, id=5) / IPv6ExtHdrFragment(m=1, id=5) / UDP() / Raw(b"x" * 8),
     "bad_ipv6_fragment"),
    ("fragment not in 8-byte units", lambda: IPv6(src=HOST6, dst=SERVER6) /
     IPv6ExtHdrFragment(m=1, id=6) / UDP() / Raw(b"x" * 5), "bad_ipv6_fragment"),
    ("first fragment without the TCP header (RFC 7112)", lambda: IPv6(src=HOST6, dst=SERVER6) /
     IPv6ExtHdrFragment(nh=6, m=1, id=7) / Raw(b"\x9c\x40\x01\xbb" + b"\0" * 12),
     "short_l4_header"),
    ("udp without checksum", None, "bad_l4_checksum"),
])
def test_hostile_chains_dropped_with_a_reason(name: str, build: object, reason: str) -> None:
    lab = lab6()
    if build is None:
        raw = bytearray(bytes(IPv6(src=HOST6, dst=SERVER6) / UDP(sport=1, dport=2) / Raw(b"x")))
        raw[46:48] = b"\0\0"  # a zero UDP checksum is invalid in IPv6
        data = bytes(raw)
    else:
        data = bytes(build())  # type: ignore[operator]
    r = lab.send(LAN6, data)
    assert r.out_iface == -1 and r.reason == reason, name


def test_truncated_extension_header() -> None:
    lab = lab6()
    data = bytearray(bytes(IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrDestOpt() / UDP()))
    data[41] = 200  # the header claims 1608 bytes
    assert lab.send(LAN6, bytes(data)).reason == "bad_ipv6_ext_header"


def test_icmpv6_error_related_to_its_flow() -> None:
    lab = lab6()
    probe = out6(UDP(sport=5000, dport=9) / Raw(b"x"))
    sent = lab.send(LAN6, probe)
    assert sent.out_iface == WAN6
    err = IPv6(src=SERVER6, dst=HOST6) / ICMPv6DestUnreach(code=4) / Raw(sent.data)
    r = lab.send(WAN6, bytes(err))
    assert r.out_iface == LAN6 and lab.dp.counters()["related"] == 1
    # One quoting a flow nobody has is dropped.
    stray = IPv6(src=SERVER6, dst=HOST6) / ICMPv6DestUnreach(code=4) / Raw(
        bytes(IPv6(src=HOST6, dst=SERVER6) / UDP(sport=1, dport=2)))
    assert lab.send(WAN6, bytes(stray)).reason == "icmp_error_no_flow"


def test_multicast_and_link_local_are_not_forwarded() -> None:
    lab = lab6()
    rs = IPv6(src="fe80::1", dst="ff02::2") / Raw(b"\x85\0\0\0\0\0\0\0")
    assert lab.send(LAN6, bytes(rs)).reason == "not_unicast"
    ll = out6(UDP(sport=1, dport=2), src="fe80::2")
    assert lab.send(LAN6, ll).reason == "martian_address"


def test_spoofed_source_refused() -> None:
    lab = lab6()
    r = lab.send(WAN6, bytes(IPv6(src=HOST6, dst=SERVER6) / UDP(sport=1, dport=2)))
    assert r.reason == "spoofed_source"


def test_firewall_rules_without_addresses_apply_to_ipv6() -> None:
    lab = lab6('''
[[firewall.rule]]
from = "lan"
protocol = "udp"
port = 53
action = "reject"
''')
    r = lab.send(LAN6, out6(UDP(sport=5, dport=53) / Raw(b"q")))
    assert r.out_iface == LAN6 and r.data[40] == 1 and r.data[41] == 1  # admin prohibited
    verify6(r.data)
    assert lab.dp.drops()["firewall_reject"] == 1


def test_ipv6_entry_survives_dump_and_restore() -> None:
    lab = lab6()
    lab.send(LAN6, out6(TCP(sport=40000, dport=443, flags="S", seq=1)))
    (e,) = lab.entries()
    lab.dp.flush(lab.now)
    assert lab.dp.restore(e, lab.now) == 0
    (again,) = lab.entries()
    assert again.src == e.src and again.family == 6
    assert IPv6Address(again.src[0]) == IPv6Address(HOST6)


# ---- NPTv6 (RFC 6296) -------------------------------------------------------

INSIDE_HOST = "fd00:77::2"
NPT = """
[[interface]]
name = "lan6"
address = "10.66.0.1/24"
address6 = "fd00:77::1/64"
zone = "lan"

[[interface]]
name = "wan6"
address = "10.67.0.1/24"
address6 = "2001:db8:2::1/64"
zone = "wan"

[[route]]
destination = "::/0"
interface = "wan6"

[[nat.npt6]]
interface = "wan6"
inside = "fd00:77::/48"
outside = "2001:db8:abc::/48"
"""


def ones_sum(words: list[int]) -> int:
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(addr: str) -> list[int]:
    return list(struct.unpack("!8H", IPv6Address(addr).packed))


def test_npt_outbound_is_checksum_neutral_and_reversible() -> None:
    lab = make_lab(NPT)
    sent = out6(UDP(sport=5000, dport=53) / Raw(b"query"), src=INSIDE_HOST)
    r = lab.send(LAN6, sent)
    assert r.out_iface == WAN6
    ext = str(IPv6(r.data).src)
    assert IPv6Address(ext) in IPv6Network("2001:db8:abc::/48")
    # RFC 6296: the one's complement sum of the address is unchanged, so the
    # UDP checksum field is the very same and still right.
    assert ones_sum(words(ext)) % 0xFFFF == ones_sum(words(INSIDE_HOST)) % 0xFFFF
    assert r.data[46:48] == sent[46:48]
    verify6(r.data)
    assert words(ext)[4:] == words(INSIDE_HOST)[4:]  # the interface ID is kept
    # The answer to the outside address comes back to the inside host.
    back = bytes(IPv6(src=SERVER6, dst=ext) / UDP(sport=53, dport=5000) / Raw(b"answer"))
    r2 = lab.send(WAN6, back)
    assert r2.out_iface == LAN6 and str(IPv6(r2.data).dst) == INSIDE_HOST
    verify6(r2.data)
    (e,) = lab.entries()  # tracked with inside addresses only
    assert e.src == (INSIDE_HOST, SERVER6) and e.seen_reply
    # Unsolicited traffic to an outside address is refused by the policy.
    r3 = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ext) / TCP(sport=1, dport=22, flags="S")))
    assert r3.reason == "policy"


def test_npt_related_error_finds_the_inside_flow() -> None:
    lab = make_lab(NPT)
    r = lab.send(LAN6, out6(UDP(sport=5001, dport=9) / Raw(b"x" * 200), src=INSIDE_HOST))
    ext = str(IPv6(r.data).src)
    err = IPv6(src="2001:db8:2::99", dst=ext) / ICMPv6DestUnreach(code=4) / Raw(r.data)
    r2 = lab.send(WAN6, bytes(err))
    assert r2.out_iface == LAN6 and lab.dp.counters()["related"] == 1
    out = IPv6(r2.data)
    assert str(out.dst) == INSIDE_HOST
    assert str(IPv6(bytes(out.payload)[8:]).src) == INSIDE_HOST  # the quote too
    verify6(r2.data)


def test_npt_subnet_ffff_is_not_translated() -> None:
    lab = make_lab(NPT + '\n[[route]]\ndestination = "fd00:77::/48"\ninterface = "lan6"\n')
    r = lab.send(LAN6, out6(UDP(sport=1, dport=2), src="fd00:77:0:ffff::2"))
    assert r.out_iface == -1 and r.reason == "npt_unmappable"


def test_firewall_rules_with_ipv6_prefixes() -> None:
    lab = lab6('''
[[firewall.rule]]
from = "lan"
source = "2001:db8:1::/64"
destination = "2001:db8:9::/48"
protocol = "tcp"
port = 25
action = "drop"

[[firewall.rule]]
from = "lan"
source = "192.168.1.0/24"
protocol = "tcp"
port = 26
action = "drop"
''')
    smtp6 = out6(TCP(sport=1000, dport=25, flags="S"))
    assert lab.send(LAN6, smtp6).reason == "firewall_drop"
    # Outside the destination prefix: not this rule.
    other = out6(TCP(sport=1000, dport=25, flags="S"), dst="2001:db8:8::1")
    assert lab.send(LAN6, other).out_iface == WAN6
    # An IPv4 rule never matches IPv6, and the IPv6 rule never IPv4.
    assert lab.send(LAN6, out6(TCP(sport=1001, dport=26, flags="S"))).out_iface == WAN6
    from tests.native.conftest import LAN, LAN_HOST, SERVER
    from tests.packets import IP
    v4 = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1002, dport=25, flags="S"))
    assert lab.send(LAN, v4).reason == "none"
    stats = lab.dp.fw_stats()
    assert stats[0][0] == 1 and stats[1][0] == 0


def test_mixed_family_rule_is_refused() -> None:
    from router.config import ConfigError
    with pytest.raises(ConfigError, match="both be IPv4 or both IPv6"):
        lab6('''
[[firewall.rule]]
source = "2001:db8:1::/64"
destination = "10.0.0.0/8"
action = "drop"
''')


# ---- per-source limits ------------------------------------------------------

def new6(lab: Lab, src: str, sport: int) -> str:
    return str(lab.send(LAN6, out6(UDP(sport=sport, dport=53), src=src)).reason)


def test_connection_cap_per_ipv6_source() -> None:
    lab = lab6("\n[firewall]\nmax_connections_per_source = 3\n")
    assert [new6(lab, HOST6, 1000 + i) for i in range(5)] == ["none"] * 3 + [
        "source_conn_limit"] * 2
    assert new6(lab, "2001:db8:1::3", 1000) == "none"  # per address by default
    lab.advance(121)  # they expire: the host may open new ones again
    lab.dp.sweep(lab.now, 1000)
    assert new6(lab, HOST6, 2000) == "none"


def test_ipv6_sources_limited_per_prefix() -> None:
    extra = "\n[firewall]\nmax_connections_per_source = 3\nsource_prefix6 = 64\n"
    lab = lab6(extra)
    # Rotating addresses inside one /64 does not get around the cap.
    got = [new6(lab, f"2001:db8:1::{i + 10:x}", 1000) for i in range(5)]
    assert got == ["none"] * 3 + ["source_conn_limit"] * 2
    # A reload that counts per address from now on forgets the old counts.
    lab.dp.load(compile_tables(parse((BASE + V6 + extra.replace("64", "128")).encode()), {}))
    assert new6(lab, "2001:db8:1::10", 2000) == "none"
    assert [new6(lab, HOST6, 3000 + i) for i in range(4)] == ["none"] * 3 + [
        "source_conn_limit"]
    # Connections counted before the reload close without disturbing the new counts.
    lab.advance(121)
    lab.dp.sweep(lab.now, 1000)
    assert [new6(lab, HOST6, 4000 + i) for i in range(4)] == ["none"] * 3 + [
        "source_conn_limit"]


def test_ipv4_and_ipv6_sources_are_counted_apart() -> None:
    lab = lab6("\n[firewall]\nmax_connections_per_source = 1\n"
               "\n[[route]]\ndestination = \"c0a8::/16\"\ninterface = \"lan6\"\n")
    from tests.packets import IP as IP4
    r = lab.send(0, bytes(IP4(src="192.168.1.2", dst="198.51.100.10") / UDP(sport=1, dport=53)))
    assert r.reason == "none"
    # The same 16 bytes as the IPv4 source's key, but another family.
    assert new6(lab, "c0a8:102::", 1) == "none"
    assert new6(lab, "c0a8:102::", 2) == "source_conn_limit"
